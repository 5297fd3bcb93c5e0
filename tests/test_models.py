"""Models: the seed's architectures exactly, regularization where it belongs."""

from __future__ import annotations

import keras
import pytest

from digit_experiments.app.help import CONF_DIR
from digit_experiments.core import models
from digit_experiments.core.config import validate
from digit_experiments.core.optimizers import build_optimizer

from .conftest import compose_cfg


def _layers(model):
    return [
        (
            type(layer).__name__,
            getattr(layer, "units", None)
            or getattr(layer, "filters", None)
            or getattr(layer, "rate", None),
        )
        for layer in model.layers
    ]


def _build(*overrides):
    conf = validate(compose_cfg(*overrides))
    return models.build_model(conf.model, conf.regularization, (28, 28, 1), 10)


def test_mlp_is_the_seed_baseline():
    model = _build("model=mlp", "regularization=none")
    assert _layers(model) == [("Flatten", None), ("Dense", 128), ("Dense", 64), ("Dense", 10)]
    assert model.count_params() == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert model.layers[-1].activation.__name__ == "softmax"


def test_cnn_is_the_seed_cnn():
    model = _build("model=cnn", "regularization=dropout")
    assert _layers(model) == [
        ("Conv2D", 32),
        ("MaxPooling2D", None),
        ("Dropout", 0.25),
        ("Conv2D", 64),
        ("MaxPooling2D", None),
        ("Dropout", 0.25),
        ("Flatten", None),
        ("Dense", 128),
        ("Dropout", 0.5),
        ("Dense", 10),
    ]
    assert model.count_params() == 225_034
    assert model.layers[0].kernel_size == (3, 3)
    assert model.output_shape == (None, 10)


def test_dropout_applies_to_the_mlp_too():
    kinds = [name for name, _ in _layers(_build("model=mlp", "regularization=dropout"))]
    assert kinds == ["Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]


@pytest.mark.parametrize("option", ["l2", "dropout_l2"])
def test_l2_goes_on_every_kernel_and_no_bias(option):
    model = _build("model=cnn", f"regularization={option}", "regularization.l2=0.001")
    weighted = [layer for layer in model.layers if hasattr(layer, "kernel")]
    assert len(weighted) == 4
    for layer in weighted:
        assert isinstance(layer.kernel_regularizer, keras.regularizers.L2)
        assert layer.kernel_regularizer.l2 == pytest.approx(0.001)
        assert layer.bias_regularizer is None
    assert len(model.losses) == 4  # one penalty per kernel, added to the loss


def test_layer_sizes_are_config_values():
    model = _build(
        "model=cnn",
        "model.conv_filters=[8,16,32]",
        "model.dense_units=[64,32]",
        "model.kernel_size=5",
        "model.pool_size=1",
        "regularization=none",
    )
    names = _layers(model)
    assert [n for n in names if n[0] == "Conv2D"] == [("Conv2D", 8), ("Conv2D", 16), ("Conv2D", 32)]
    assert [n for n in names if n[0] == "Dense"] == [("Dense", 64), ("Dense", 32), ("Dense", 10)]


@pytest.mark.parametrize(
    ("option", "cls", "extra"),
    [
        ("adam", keras.optimizers.Adam, {"beta_1": 0.8}),
        ("adamw", keras.optimizers.AdamW, {"weight_decay": 0.01}),
        ("sgd", keras.optimizers.SGD, {"momentum": 0.5, "nesterov": False}),
        ("rmsprop", keras.optimizers.RMSprop, {"rho": 0.8, "centered": True}),
    ],
)
def test_optimizers_carry_their_own_parameters(option, cls, extra):
    overrides = [f"optimizer={option}", "optimizer.learning_rate=0.005"]
    overrides += [
        f"optimizer.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in extra.items()
    ]
    optimizer = build_optimizer(validate(compose_cfg(*overrides)).optimizer)
    assert isinstance(optimizer, cls)
    config = optimizer.get_config()
    assert config["learning_rate"] == pytest.approx(0.005)
    for key, value in extra.items():
        assert config[key] == pytest.approx(value)


def test_vgg_stacks_conv_batchnorm_blocks():
    model = _build("model=vgg", "regularization=none")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[:7] == ["Conv2D", "BatchNormalization", "Activation"] * 2 + ["MaxPooling2D"]
    assert kinds.count("Conv2D") == 6 and kinds.count("MaxPooling2D") == 3
    assert kinds.count("BatchNormalization") == 7  # six convs and the dense layer
    assert all(not layer.use_bias for layer in model.layers if type(layer).__name__ == "Conv2D")
    assert model.output_shape == (None, 10)


def test_vgg_blocks_can_differ_in_conv_count_and_kernel():
    model = _build(
        "experiment=best_cnn",
        "model.convs_per_block=[1,2]",
        "model.kernel_size=[5,3]",
        "model.block_filters=[32,64]",
    )
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [(c.name, c.kernel_size) for c in convs] == [
        ("block1_conv1", (5, 5)),
        ("block2_conv1", (3, 3)),
        ("block2_conv2", (3, 3)),
    ]
    # valid padding: 28 -> 24 (5x5) -> 12 (pool) -> 10 -> 8 -> 4 (pool)
    assert model.get_layer("flatten").output.shape[1] == 4 * 4 * 64


def test_batchnorm_goes_between_each_layer_and_its_activation():
    model = _build("model=cnn", "regularization=batchnorm")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[:4] == ["Conv2D", "BatchNormalization", "Activation", "MaxPooling2D"]
    assert model.layers[0].activation.__name__ == "linear"


def test_augmentation_acts_in_training_only():
    import numpy as np

    model = _build("model=mlp", "regularization=augment")
    augment = [layer for layer in model.layers if layer.name.startswith("augment_")]
    assert [layer.name for layer in augment] == [
        "augment_rotation",
        "augment_shift",
        "augment_zoom",
    ]
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    for layer in augment:
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    assert not np.allclose(np.asarray(augment[0](x, training=True)), x)


# --- a model is one module and one YAML file ------------------------------------------

TINY_MODULE = """
from dataclasses import dataclass

from digit_experiments.core.models.base import ModelSpec
from digit_experiments.core.schema import spec


@dataclass
class Tiny(ModelSpec):
    units: int = spec(16, ge=1)

    def build(self, input_shape, num_classes, reg):
        import keras
        from keras import layers

        from digit_experiments.core.models import blocks

        return keras.Sequential(
            [
                *blocks.inputs(input_shape, reg),
                layers.Flatten(),
                *blocks.dense_head([self.units], "relu", reg, num_classes),
            ],
            name=self.OPTION,
        )
"""
TINY_YAML = """# @package _global_
defaults:
  - /schema/model/tiny@model
  - override /regularization: dropout
  - _self_

model:
  name: tiny
  units: 16
"""
ADD_AND_TRAIN = """
import json, sys
from digit_experiments.core import models
models.__path__.append(sys.argv[1])  # where the new module is
from hydra import compose, initialize_config_dir
from digit_experiments.app.resolvers import register_resolvers
from digit_experiments.app.run import train
from digit_experiments.core.config import register_configs, validate
from digit_experiments.errors import ConfigError

register_configs()
register_resolvers()
small = ["data.train_limit=2000", "data.test_limit=200", "trainer.epochs=2"]
with initialize_config_dir(sys.argv[2], version_base="1.3"):
    cfg = compose("config", overrides=["model=tiny", "model.units=32", *small, sys.argv[3]])
    try:
        validate(compose("config", overrides=["model=tiny", "model.units=0"]))
        refused = None
    except ConfigError as e:
        refused = str(e)
metrics = train(cfg, output_dir=sys.argv[4])
print(json.dumps({"refused": refused, "accuracy": metrics["test_accuracy"]}))
"""


def test_a_new_model_is_one_module_and_one_yaml_file(tmp_path):
    """Add `tiny`: its module beside the others, its YAML in conf/model/, nothing else
    (no list of models, no help text, no shape or class constants). It composes with its
    schema's checks and trains."""
    import json
    import shutil
    import subprocess
    import sys

    from .conftest import clean_env

    extra, conf = tmp_path / "models", tmp_path / "conf"
    extra.mkdir()
    (extra / "tiny.py").write_text(TINY_MODULE)
    shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "tiny.yaml").write_text(TINY_YAML)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            ADD_AND_TRAIN,
            str(extra),
            str(conf),
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert "model.units must be >= 1, got 0" in answer["refused"]
    assert answer["accuracy"] > 0.6  # it learnt: 2,000 images, 2 epochs (chance is 0.1)


@pytest.mark.parametrize("option", sorted(models.specs()))
def test_every_model_takes_its_input_shape_and_classes_from_the_data(option):
    conf = validate(compose_cfg(f"model={option}", "regularization=none"))
    model = models.build_model(conf.model, conf.regularization, (36, 36, 1), 3)
    assert model.input_shape == (None, 36, 36, 1) and model.output_shape == (None, 3)


def test_every_model_option_has_its_module_and_its_yaml():
    yaml_options = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    assert yaml_options == sorted(models.specs())
