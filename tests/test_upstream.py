"""Upstream bugs this project works around, each shown to be still there: when one of
these tests fails, the bug is fixed upstream and its workaround can go."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from digit_experiments.tracking.logged_model import save_keras_model


def _model():
    return keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )


def test_mlflow_keras_save_model_still_fails_with_an_input_example(tmp_path):
    """mlflow/mlflow#16183: mlflow.keras.save_model writes the input example before it
    creates the model folder. The workaround: tracking.logged_model.save_keras_model,
    which creates the folder first. If this test fails, MLflow is fixed: drop the
    makedirs there (and this test)."""
    import mlflow.keras

    example = np.zeros((1, 28, 28, 1), np.float32)
    with pytest.raises(FileNotFoundError):
        mlflow.keras.save_model(_model(), str(tmp_path / "model"), input_example=example)


def test_the_workaround_saves_the_model_with_its_input_example(tmp_path):
    from mlflow.models import Model

    example = np.zeros((1, 28, 28, 1), np.float32)
    save_keras_model(str(tmp_path / "model"), model=_model(), input_example=example)
    saved = Model.load(str(tmp_path / "model"))
    assert "keras" in saved.flavors and saved.saved_input_example_info is not None
