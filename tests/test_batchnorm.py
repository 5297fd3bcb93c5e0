"""trainer.recalibrate_bn: batch normalisation's statistics recomputed on clean pictures,
checked against the statistics computed here by hand, and in a real tracked run."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from digit_experiments.app.run import train
from digit_experiments.core import batchnorm, data
from digit_experiments.core.config import validate

from .conftest import small_cfg


def _network() -> keras.Sequential:
    """Augmentation, conv -> BN, dropout, dense -> BN, and a frozen BN: every case."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.RandomTranslation(0.3, 0.3, name="shift"),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="conv_bn"),
            keras.layers.Activation("relu"),
            keras.layers.Dropout(0.5, name="drop"),
            keras.layers.Flatten(),
            keras.layers.Dense(6, name="hidden"),
            keras.layers.BatchNormalization(name="dense_bn"),
            keras.layers.BatchNormalization(name="frozen_bn", trainable=False),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )


def _stats(layer) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)


def test_each_layer_gets_the_statistics_of_its_clean_inputs_in_inference_mode():
    keras.utils.set_random_seed(3)
    model = _network()
    # More pictures than one chunk: the statistics add up across chunks.
    images = np.random.default_rng(0).random((batchnorm.CHUNK + 700, 8, 8, 1), "float32")
    for name in ("conv_bn", "dense_bn", "frozen_bn"):
        layer = model.get_layer(name)
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 5.0, "float32"))
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, 9.0, "float32"))
    frozen = _stats(model.get_layer("frozen_bn"))

    assert batchnorm.recalibrate(model, images) == 2

    # The conv layer's outputs: no shift, no dropout (inference), over batch and pixels.
    conv = keras.ops.convert_to_numpy(model.get_layer("conv")(images)).astype(np.float64)
    mean, variance = _stats(model.get_layer("conv_bn"))
    np.testing.assert_allclose(mean, conv.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, conv.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    # The dense layer's inputs go through conv_bn with its new statistics.
    upto_dense = keras.Model(model.inputs[0], model.get_layer("hidden").output)
    dense = keras.ops.convert_to_numpy(upto_dense(images, training=False)).astype(np.float64)
    mean, variance = _stats(model.get_layer("dense_bn"))
    np.testing.assert_allclose(mean, dense.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, dense.var(axis=0), rtol=1e-4, atol=1e-6)
    # A frozen layer keeps the statistics it came with.
    for kept, now in zip(frozen, _stats(model.get_layer("frozen_bn"))):
        np.testing.assert_array_equal(kept, now)


def test_pictures_are_a_seeded_subset_without_repeats():
    x = np.arange(100, dtype="float32").reshape(100, 1, 1, 1)
    picked = batchnorm.pictures(x, 30, seed=7)
    assert len(np.unique(picked)) == 30
    np.testing.assert_array_equal(picked, batchnorm.pictures(x, 30, seed=7))
    assert not np.array_equal(picked, batchnorm.pictures(x, 30, seed=8))
    assert batchnorm.pictures(x, 500, seed=7) is x


@pytest.mark.parametrize("recalibrate", [0, 400])
def test_a_run_checkpoints_the_statistics_of_the_weights_it_ships(tmp_path, recalibrate):
    """With trainer.ema, the best checkpoint holds the averaged weights; with
    trainer.recalibrate_bn, also the batch-norm statistics of those weights on clean
    pictures, so recomputing them changes nothing. Without it, the checkpoint keeps
    the moving averages of the trained weights on augmented pictures, far from them."""
    out = tmp_path / "out"
    cfg = small_cfg(
        tmp_path,
        "model=vgg",
        "model.block_filters=[8,16]",
        "model.convs_per_block=1",
        "regularization=batchnorm_augment",
        "trainer.epochs=2",
        "trainer.ema=0.99",
        f"trainer.recalibrate_bn={recalibrate}",
        "tracking.log_model=false",
    )
    metrics = train(cfg, output_dir=out)
    conf = validate(cfg)
    shipped = keras.models.load_model(out / "vgg_best_model.h5", compile=False)
    before = [_stats(layer) for layer in batchnorm.layers_to_recalibrate(shipped)]
    assert len(before) == 3  # two conv blocks and the dense layer

    splits = data.load(conf.data, conf.trainer.seed)
    batchnorm.recalibrate(shipped, batchnorm.pictures(splits.x_train, 400, conf.trainer.seed))
    after = [_stats(layer) for layer in batchnorm.layers_to_recalibrate(shipped)]
    moved = max(
        float(np.abs(b[0] - a[0]).max() / np.sqrt(a[1]).mean()) for b, a in zip(before, after)
    )
    if recalibrate:
        assert moved < 1e-3
        assert metrics["test_accuracy"] > 0.5
    else:
        assert moved > 0.05
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])[0]
    assert run.data.params["trainer.recalibrate_bn"] == str(recalibrate)


def test_a_network_without_batch_norm_is_trained_with_a_warning(tmp_path, caplog):
    cfg = small_cfg(tmp_path, "model=mlp", "trainer.recalibrate_bn=100", "tracking.log_model=false")
    with caplog.at_level("WARNING", logger="digit_experiments.app.run"):
        train(cfg, output_dir=tmp_path / "out")
    assert "trainer.recalibrate_bn=100: this mlp network has no trainable batch" in caplog.text
