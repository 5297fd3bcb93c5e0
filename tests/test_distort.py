"""Elastic distortions (regularization.augment.elastic) and the single affine transform
(regularization.augment.single_transform): what they do to real MNIST pictures, that a
run trains with them, and that they are refused where they cannot run."""

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

    def spy(images, **moves):
        traced.append(tuple(sorted(moves.items())))
        return transform(images, **moves)

    transform = distort.transform
    monkeypatch.setattr(distort, "transform", spy)
    cfg = small_cfg(tmp_path, "model=mlp", "trainer.epochs=2", *ELASTIC)
    metrics = train(cfg, output_dir=tmp_path / "out")
    # Elastic only: rotation, shift and zoom are the model's layers (single_transform off).
    assert traced and set(traced) == {(("alpha", 34.0), ("sigma", 4.0))}
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


# --- one affine transform (regularization.augment.single_transform) ---------------------

SINGLE = ["regularization=augment", "regularization.augment.single_transform=true"]


def _at(pictures, **values):
    """The pictures moved by `affine_coordinates` with these values for every picture."""
    n = len(pictures)
    given = {"angle": 0.0, "scale": 1.0, "shift_y": 0.0, "shift_x": 0.0, **values}
    y, x = distort.affine_coordinates(28, 28, **{k: np.full(n, v) for k, v in given.items()})
    return distort.bilinear(tf.constant(pictures), y, x).numpy()


def test_the_affine_transform_rotates_scales_and_shifts_about_the_centre(pictures):
    assert np.array_equal(_at(pictures), pictures)  # nothing asked: the same pixels
    # Two pixels down and three left: rows come from two above, columns from three right.
    moved = _at(pictures, shift_y=2.0, shift_x=-3.0)
    np.testing.assert_allclose(moved[:, 2:, :-3], pictures[:, :-2, 3:], atol=1e-6)
    assert not moved[:, :2].any() and not moved[:, :, -3:].any()  # background came in
    # A quarter turn is a quarter turn of the grid (which way is the draw's sign).
    turned = _at(pictures, angle=np.pi / 2)
    quarter = [np.rot90(pictures, k, axes=(1, 2)) for k in (1, 3)]
    assert min(np.abs(turned - q).max() for q in quarter) < 1e-4
    # Twice the size about the centre: the centre pixel stays, the ink doubles in extent.
    twice = _at(pictures, scale=2.0)
    assert twice.sum() > 2.5 * pictures.sum()


def test_one_transform_blurs_less_than_keras_three_layers(pictures):
    """The option's reason: RandomRotation, RandomTranslation and RandomZoom resample a
    picture three times; one transform with the same ranges resamples it once."""
    import keras

    def edges(images):  # squared steps between neighbouring pixels: what blur takes away
        a = np.asarray(images)[..., 0]
        return (np.diff(a, axis=1) ** 2).sum() + (np.diff(a, axis=2) ** 2).sum()

    keras.utils.set_random_seed(5)
    layers = [
        keras.layers.RandomRotation(10 / 360, fill_mode="constant"),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
        keras.layers.RandomZoom(0.1, fill_mode="constant"),
    ]
    three = pictures
    for layer in layers:
        three = layer(three, training=True)
    one = distort.transform(tf.constant(pictures), rotation=10.0, shift=0.1, zoom=0.1).numpy()
    assert not np.allclose(one, pictures)
    # Measured on 2,000 training pictures: 43% of the edges left after three, 66% after one.
    assert edges(three) < 0.55 * edges(pictures)
    assert edges(one) > 0.6 * edges(pictures)
    assert 0.9 < one.sum() / pictures.sum() < 1.1  # the ink stays (zoom in and out)


def test_a_run_moves_its_pictures_in_the_pipeline_and_the_model_stays_plain(tmp_path, monkeypatch):
    from digit_experiments.core import models, pipeline

    conf = validate(small_cfg(tmp_path, "model=cnn", *SINGLE, "trainer.pipeline=dataset"))
    model = models.build_model(conf.model, conf.regularization, (28, 28, 1), 10)
    assert not [layer.name for layer in model.layers if layer.name.startswith("augment_")]
    with_layers = validate(small_cfg(tmp_path, "model=cnn", "regularization=augment"))
    built = models.build_model(with_layers.model, with_layers.regularization, (28, 28, 1), 10)
    assert [layer.name for layer in built.layers if layer.name.startswith("augment_")]

    splits = data.load(conf.data, conf.trainer.seed)
    one_hot = np.eye(10, dtype=np.float32)
    augment = conf.regularization.augment
    moved = pipeline.fit_inputs(splits, one_hot, conf.trainer, augment)
    plain = pipeline.fit_inputs(splits, one_hot, conf.trainer, None)
    # The same seeded shuffle: batch for batch the same pictures, each one moved.
    (images, labels), (originals, same) = (next(iter(d["x"])) for d in (moved, plain))
    assert np.array_equal(labels.numpy(), same.numpy())
    assert (np.abs(images.numpy() - originals.numpy()).max(axis=(1, 2, 3)) > 0.05).all()
    val_images, _ = next(iter(moved["validation_data"]))
    assert np.array_equal(val_images.numpy(), splits.x_val[: len(val_images)])  # untouched

    cfg = small_cfg(tmp_path, "model=cnn", "trainer.epochs=2", *SINGLE, "trainer.pipeline=dataset")
    metrics = train(cfg, output_dir=tmp_path / "out")
    assert metrics["test_accuracy"] > 0.7
    (run,) = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])
    assert run.data.params["regularization.augment.single_transform"] == "True"


def test_the_single_transform_with_the_arrays_pipeline_is_refused_naming_both_keys():
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*SINGLE, "trainer.pipeline=arrays"))
    message = str(err.value)
    assert "regularization.augment.single_transform=true needs trainer.pipeline=dataset" in message
    assert "got trainer.pipeline=arrays" in message
    validate(
        compose_cfg(*SINGLE, "regularization.augment.enabled=false", "trainer.pipeline=arrays")
    )
