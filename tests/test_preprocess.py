"""MNIST-style preprocessing: a pure function (NumPy), shared by predict and serving."""

from __future__ import annotations

import numpy as np
import pytest

from digit_experiments.core import data
from digit_experiments.errors import ImageError
from digit_experiments.inference.preprocess import batch_to_mnist, prepare, to_grayscale, to_mnist


@pytest.fixture(scope="module")
def digits():
    arrays = data.load_idx_dir(data.bundled_dir(), verify=False)
    return arrays["test_images"][:50]


def _centre_of_mass(image):
    ys, xs = np.indices(image.shape)
    return (ys * image).sum() / image.sum(), (xs * image).sum() / image.sum()


def test_mnist_digits_come_back_nearly_unchanged(digits):
    out = np.stack([to_mnist(d) for d in digits])
    assert out.shape == (50, 28, 28) and out.dtype == np.float32
    assert np.abs(out - digits / 255.0).mean() < 0.08


def test_dark_ink_on_light_paper_is_inverted(digits):
    np.testing.assert_allclose(to_mnist(255 - digits[0]), to_mnist(digits[0]), atol=0.05)


def test_any_size_is_cropped_fitted_into_20x20_and_centred(digits):
    big = np.kron(255 - digits[3], np.ones((5, 5), dtype=np.uint8))  # 140x140, inverted
    page = np.full((300, 200), 255, dtype=np.uint8)
    page[20:160, 30:170] = big  # off-centre on a larger sheet
    out = to_mnist(page)
    rows, cols = np.nonzero(out > 0.2)
    assert np.ptp(rows) < 21 and np.ptp(cols) < 21
    cy, cx = _centre_of_mass(out)
    assert abs(cy - 13.5) < 1.0 and abs(cx - 13.5) < 1.0
    assert np.abs(out - to_mnist(digits[3])).mean() < 0.08


def test_colour_and_alpha_images_are_read_as_gray(digits):
    rgb = np.stack([digits[0]] * 3, axis=-1)
    np.testing.assert_allclose(to_grayscale(rgb), digits[0] / 255.0, atol=1e-6)
    rgba = np.concatenate([rgb, np.full((28, 28, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_allclose(to_grayscale(rgba), digits[0] / 255.0, atol=1e-6)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_an_image_of_one_colour_is_refused(value):
    with pytest.raises(ImageError, match="empty or all one colour"):
        to_mnist(np.full((40, 30), value, dtype=np.uint8))


def test_batches_in_mnist_format_are_only_scaled(digits):
    out = batch_to_mnist(digits[:4])
    assert out.shape == (4, 28, 28, 1)
    np.testing.assert_allclose(out[..., 0], digits[:4] / 255.0)
    np.testing.assert_allclose(batch_to_mnist(digits[:4].reshape(4, 784)), out)


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4, 5), (0, 28, 28)])
def test_wrong_array_shapes_are_refused(shape):
    with pytest.raises(ImageError, match="expected images"):
        batch_to_mnist(np.zeros(shape))


# --- one rule for every picture: PNG or array, bytes or floats --------------------------


def test_a_picture_of_the_models_size_is_taken_as_framed(digits):
    np.testing.assert_array_equal(prepare(digits[0]), digits[0] / np.float32(255))
    # dark on light: only the polarity changes
    np.testing.assert_allclose(prepare(255 - digits[0]), digits[0] / 255.0, atol=1e-6)


def test_floats_in_0_1_and_bytes_are_the_same_picture(digits):
    np.testing.assert_allclose(
        prepare(digits[5].astype(np.float64) / 255.0), prepare(digits[5]), atol=1e-6
    )
    big = np.kron(digits[5], np.ones((3, 3), dtype=np.uint8))
    np.testing.assert_allclose(prepare(big.astype(np.float32) / 255.0), prepare(big), atol=1e-6)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (lambda d: d.astype(np.float32), r"float pixel values must be in \[0, 1\]"),
        (lambda d: np.where(d > 0, np.nan, 0.0), "pixel values contain NaN"),
        (lambda d: d / 255.0 / 255.0, "divided by 255 twice"),
    ],
)
def test_pixel_values_that_break_the_rule_are_refused(digits, values, message):
    with pytest.raises(ImageError, match=message):
        prepare(values(digits[0]))


def test_an_array_of_one_picture_of_any_size_is_one_picture(digits):
    picture = np.kron(255 - digits[2], np.ones((4, 4), dtype=np.uint8))  # 112x112, dark ink
    batch = batch_to_mnist(picture)
    assert batch.shape == (1, 28, 28, 1)
    np.testing.assert_allclose(batch[0, ..., 0], to_mnist(picture))
