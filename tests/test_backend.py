"""Keras on another backend: a real run on JAX (CPU here) with TensorFlow made
unimportable, read back from its store and served by this TensorFlow process; and the
TensorFlow-only options refused at compose time on other backends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from digit_experiments.core import data
from digit_experiments.core.config import validate
from digit_experiments.errors import ConfigError
from digit_experiments.inference import served
from tests.conftest import SMALL, clean_env, compose_cfg

# The train entry point where `import tensorflow` fails as on a machine without it: a
# finder refuses the name, so nothing (not even sys.modules) knows TensorFlow.
WITHOUT_TENSORFLOW = """
import runpy, sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTensorFlow())
sys.argv = ["digits-train", *sys.argv[1:]]
runpy.run_module("digit_experiments.train", run_name="__main__")
"""


def train_on_jax(tmp_path, *overrides):
    pytest.importorskip("jax", reason="pip install jax (the test extra has it)")
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, *overrides],
        cwd=tmp_path,
        env={**clean_env(), "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_run_on_jax_needs_no_tensorflow_records_its_backend_and_serves_anywhere(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # fast's own 3 epochs on the small slice: enough to tell learning from noise
    limits = [o for o in SMALL if o.startswith("data.")]
    done = train_on_jax(tmp_path, "experiment=fast", *limits, f"tracking.uri={uri}")
    assert done.returncode == 0, done.stderr[-3000:]

    (run,) = mlflow.MlflowClient(uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()]
    )
    assert run.info.status == "FINISHED"
    tags, params = run.data.tags, run.data.params
    assert tags["keras.backend"] == "jax"
    assert tags["device"] == "cpu"
    assert "version.jax" in tags and "version.tensorflow" not in tags
    # trainer.jit_compile=auto: Keras compiles the step with XLA on JAX (off, every step
    # would run op by op).
    assert params["trainer.jit_compile"] == "auto"
    assert params["model.jit_compiled"] == "True"
    assert run.data.metrics["test_accuracy"] > 0.85

    # The logged model names jax among its requirements, and this process (TensorFlow)
    # loads and serves it: the .keras file is the same on every backend.
    client = mlflow.MlflowClient(uri)
    (logged,) = client.search_logged_models([run.info.experiment_id])
    requirements = mlflow.artifacts.download_artifacts(
        f"{logged.artifact_location}/requirements.txt"
    )
    assert any(line.startswith("jax==") for line in Path(requirements).read_text().splitlines())
    arrays = data.load_idx_dir(data.bundled_dir())
    images, labels = arrays["test_images"][:50], arrays["test_labels"][:50]
    answer = mlflow.pyfunc.load_model(f"models:/{logged.model_id}").predict(
        pd.DataFrame({"image": [served.png(image) for image in images]})
    )
    assert np.mean(answer["digit"] == labels) > 0.8


def test_best_cnn_compiles_on_jax_augmentation_and_weight_averaging_included(tmp_path):
    """Keras marks its augmentation layers unfit for XLA, which would make the whole
    model run op by op on JAX; there they compile, with the EMA swap at each epoch. The
    preset's single transform is made in tf.data, which needs TensorFlow: without it,
    best_cnn runs with the model's three augmentation layers and Keras' own batches."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tiny = ["data.train_limit=1000", "data.test_limit=200", "trainer.epochs=2"]
    tiny += ["trainer.pipeline=arrays", "regularization.augment.single_transform=false"]
    done = train_on_jax(tmp_path, "experiment=best_cnn", *tiny, f"tracking.uri={uri}")
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert run.data.params["regularization.augment.enabled"] == "True"
    assert run.data.params["model.jit_compiled"] == "True"
    assert run.data.metrics["epochs_trained"] == 2


def test_tf_data_without_tensorflow_is_refused_before_a_run_opens(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = train_on_jax(tmp_path, *SMALL, "trainer.pipeline=dataset", f"tracking.uri={uri}")
    assert done.returncode != 0
    assert "trainer.pipeline=dataset" in done.stderr
    assert "TensorFlow is not installed: use trainer.pipeline=arrays" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused at compose time: no run
    # best_cnn's single transform is made in tf.data too: one message says both.
    done = train_on_jax(tmp_path, *SMALL, "experiment=best_cnn", f"tracking.uri={uri}")
    assert done.returncode != 0
    assert (
        "use trainer.pipeline=arrays with regularization.augment.single_transform=false"
        in done.stderr
    )
    assert not (tmp_path / "mlflow.db").exists()


def test_tensorflow_only_options_are_refused_on_another_backend(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(ConfigError, match=r"trainer.deterministic=true .* runs on jax"):
        validate(compose_cfg("trainer.deterministic=true"))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert validate(compose_cfg("trainer.deterministic=true")).trainer.deterministic


@pytest.mark.parametrize("value", ["auto", "true", "false"])
def test_jit_compile_takes_auto_true_or_false(value):
    expected = {"auto": "auto", "true": True, "false": False}[value]
    assert validate(compose_cfg(f"trainer.jit_compile={value}")).trainer.jit_compile == expected


def test_jit_compile_refuses_anything_else():
    with pytest.raises(ConfigError, match=r"trainer.jit_compile must be one of \[auto, True, "):
        validate(compose_cfg("trainer.jit_compile=sometimes"))
