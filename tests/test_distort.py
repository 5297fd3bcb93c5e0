"""Elastic distortions (regularization.augment.elastic): what they do to real MNIST
pictures, that a run trains with them, and that they are refused where they cannot run."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from digit_experiments.app.run import train
from digit_experiments.core import data, distort
from digit_experiments.core.config import validate
from digit_experiments.errors import ConfigError

from .conftest import compose_cfg, small_cfg

ELASTIC = ["regularization=augment", "regularization.augment.elastic=34"]


@pytest.fixture(scope="module")
def pictures() -> np.ndarray:
    arrays = data.load_idx_dir(data.bundled_dir())
    return data.to_model_input(arrays["test_images"][:64])


def test_no_displacement_leaves_the_pictures_as_they_are(pictures):
    assert np.array_equal(distort.elastic(tf.constant(pictures), 0.0, 4.0).numpy(), pictures)


def test_the_field_is_smooth_and_as_large_as_asked():
    field = distort.displacement(64, 28, 28, 34.0, 4.0, seed=1).numpy()
    assert field.shape == (64, 28, 28, 2)
    # Simard et al.'s alpha 34, sigma 4: about a pixel, a few at most.
    assert 0.5 < field.std() < 2.5 and np.abs(field).max() < 10
    # Smooth: neighbours move alike (for unsmoothed noise the mean step between
    # neighbours is about 1.1 standard deviations).
    assert np.abs(np.diff(field, axis=1)).mean() < 0.3 * field.std()
    assert np.abs(np.diff(field, axis=2)).mean() < 0.3 * field.std()
    # dy and dx are drawn apart (Keras' RandomElasticTransform uses one field for both).
    assert not np.allclose(field[..., 0], field[..., 1])
    # Twice the alpha, twice as far.
    double = distort.displacement(64, 28, 28, 68.0, 4.0, seed=1).numpy()
    assert double.std() == pytest.approx(2 * field.std(), rel=0.1)


def test_each_picture_moves_differently_and_keeps_its_ink(pictures):
    tf.random.set_seed(12)  # the same fields on every run of the test
    out = distort.elastic(tf.constant(pictures), 34.0, 4.0).numpy()
    assert out.shape == pictures.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    moved = np.abs(out - pictures).mean(axis=(1, 2, 3))
    assert (moved > 0.01).all()  # every picture changed
    # Bent, not scrambled: they still overlap their originals (a random other digit
    # correlates about 0.25 on average, an unmoved one 1.0). Not every one: a thin "1"
    # moved sideways by two pixels can overlap nothing, so the test asks it of nine in
    # ten (over 200 unseeded draws: mean overlap >= 0.56, tenth percentile >= 0.30).
    overlap = [np.corrcoef(o.ravel(), p.ravel())[0, 1] for o, p in zip(out, pictures)]
    assert np.mean(overlap) > 0.45 and np.quantile(overlap, 0.1) > 0.15
    assert 0.5 < (out.sum() / pictures.sum()) < 1.5  # about as much ink in all
    again = distort.elastic(tf.constant(pictures), 34.0, 4.0).numpy()
    assert not np.allclose(again, out)  # a fresh field every call: every epoch differs


def test_a_run_trains_with_elastic_distortions_and_logs_them(tmp_path, monkeypatch):
    traced = []  # the tf.data pipeline calls it once, to trace the batch transformation

    def spy(images, alpha, sigma, seed=None):
        traced.append((alpha, sigma))
        return elastic(images, alpha, sigma, seed)

    elastic = distort.elastic
    monkeypatch.setattr(distort, "elastic", spy)
    cfg = small_cfg(tmp_path, "model=mlp", "trainer.epochs=2", *ELASTIC)
    metrics = train(cfg, output_dir=tmp_path / "out")
    assert traced and set(traced) == {(34.0, 4.0)}
    # 2,000 images, 2 epochs, every augmentation at once: about 0.58 (chance: 0.1).
    assert metrics["test_accuracy"] > 0.4
    (run,) = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])
    assert run.data.params["regularization.augment.elastic"] == "34.0"
    assert run.data.params["regularization.augment.elastic_sigma"] == "4.0"


def test_elastic_distortions_with_the_arrays_pipeline_are_refused_naming_both_keys():
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*ELASTIC, "trainer.pipeline=arrays"))
    assert "regularization.augment.elastic=34.0 needs trainer.pipeline=dataset" in str(err.value)
    assert "got trainer.pipeline=arrays" in str(err.value)
    # Off (0) or with augmentation disabled, the arrays pipeline is fine.
    validate(compose_cfg("regularization=augment", "trainer.pipeline=arrays"))
    validate(
        compose_cfg(*ELASTIC, "regularization.augment.enabled=false", "trainer.pipeline=arrays")
    )
