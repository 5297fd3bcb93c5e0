"""Pixel values: one rule for every image that enters a model, from a data set or a
picture (NumPy only).

Integer images hold 0-255 (MNIST's bytes); float images must already be in [0, 1] and
are used as they are. So a float array is never divided by 255 twice, and a 28x28 .npy
array and a PNG of the same digit become the same model input.
"""

from __future__ import annotations

import numpy as np

from digit_experiments.errors import ImageError

# A float image whose brightest pixel is at most this was divided by 255 twice:
# real [0, 1] images have ink near 1.
TWICE_SCALED = 1.0 / 255.0 + 1e-6


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """`images` as float32 in [0, 1]. Raises ImageError saying what is wrong with them."""
    array = np.asarray(images)
    scale = check_pixels(array)
    values = array.astype(np.float32)
    return values / scale if scale != 1.0 else values


def check_pixels(images: np.ndarray) -> float:
    """What to divide `images` by to bring them into [0, 1] (255 for integers, 1 for
    floats and booleans); raises ImageError if their values break the rule."""
    array = np.asarray(images)
    if array.dtype == bool:
        return 1.0
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype != np.uint8 and array.size and (array.min() < 0 or array.max() > 255):
            raise ImageError(
                f"integer pixel values must be 0-255, found {array.min()} to {array.max()}"
            )
        return 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageError(f"pixel values must be numbers, got dtype {array.dtype}")
    if array.size == 0:
        return 1.0
    if not np.isfinite(array).all():
        bad = "NaN" if np.isnan(array).any() else "infinite values"
        raise ImageError(f"pixel values contain {bad}")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ImageError(
            f"float pixel values must be in [0, 1], found {low:g} to {high:g} (for 0-255 "
            "values use an integer type such as uint8)"
        )
    if 0.0 < high <= TWICE_SCALED:
        raise ImageError(
            f"float pixel values are all at most {high:.6f}: divided by 255 twice? (floats "
            "must be in [0, 1], integers 0-255)"
        )
    return 1.0
