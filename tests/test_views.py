"""Shifted views (core/views.py, trainer.test_time_shift): the wrapped model answers the
mean of the network's softmax on the picture and on it moved whole pixels, with zeros
coming in at the edge, and saves as plain Keras. The runs and ensembles that use them:
tests/test_ensemble.py."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from digit_experiments.core import data, views
from digit_experiments.errors import ModelError


def moved(x: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """NumPy's answer: (N, H, W, C) moved `rows` down and `columns` right, zero-filled."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(rows, 0) : h + min(rows, 0), max(columns, 0) : w + min(columns, 0)] = x[
        :, max(-rows, 0) : h + min(-rows, 0), max(-columns, 0) : w + min(-columns, 0)
    ]
    return out


@pytest.fixture(scope="module")
def pictures():
    arrays = data.load_idx_dir(data.bundled_dir())
    return data.to_model_input(arrays["test_images"][:32])


def network() -> keras.Model:
    """A network that sees where every pixel is (no pooling, no convolution)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mlp",
    )


def test_offsets_are_the_picture_then_its_four_straight_neighbours():
    assert views.offsets(2) == [(0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)]
    assert "5 views" in views.describe(1) and "1 px" in views.describe(1)


@pytest.mark.parametrize(("rows", "columns"), [(1, 0), (-1, 0), (0, 2), (0, -3)])
def test_each_view_moves_the_pixels_whole_with_zeros_coming_in(pictures, rows, columns):
    inputs = keras.Input((28, 28, 1))
    shift = keras.Model(inputs, views.shifted(inputs, rows, columns, 0))
    got = shift.predict(pictures, verbose=0)
    np.testing.assert_array_equal(got, moved(pictures, rows, columns))


def test_the_wrapped_model_answers_the_mean_over_the_views(pictures):
    net = network()
    wrapped = views.wrap(net, 1)
    expected = np.mean(
        [net.predict(moved(pictures, r, c), verbose=0) for r, c in views.offsets(1)], axis=0
    )
    np.testing.assert_allclose(wrapped.predict(pictures, verbose=0), expected, atol=1e-6)
    # One set of weights: the network inside is the one given.
    assert views.inner(wrapped) is net and wrapped.count_params() == net.count_params()
    assert views.inner(net) is net


def test_it_saves_and_loads_as_plain_keras_in_safe_mode(pictures, tmp_path):
    wrapped = views.wrap(network(), 2)
    path = tmp_path / "model.keras"
    wrapped.save(path)
    loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(pictures, verbose=0), wrapped.predict(pictures, verbose=0), atol=1e-6
    )
    assert loaded.name == views.NAME and views.inner(loaded).name == views.NETWORK


def test_a_shift_that_leaves_the_picture_or_a_non_picture_is_refused():
    with pytest.raises(ModelError, match="test-time shift must be 1 to 27 pixels .* got 28"):
        views.wrap(network(), 28)
    flat = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    with pytest.raises(ModelError, match=r"takes input \(None, 784\)"):
        views.wrap(flat, 1)
