"""Turn any picture of a digit into an MNIST-like 28x28 image (NumPy only).

MNIST was made like this (LeCun et al.): white digit on black, the digit's bounding box
scaled to fit a 20x20 box (keeping its aspect ratio), then placed in a 28x28 image so
that its centre of mass is at the centre. `to_mnist` does the same to a scan or a photo
of a dark digit on light paper as well as to MNIST's own light-on-dark images, so that
`digits predict` and a served model see what the model was trained on.
"""

from __future__ import annotations

import numpy as np

SIZE = 28
BOX = 20
# A pixel is ink when it is this far (0..1) from the background level.
INK_THRESHOLD = 0.2
# Below this contrast an image is "all one colour": there is no digit to find.
MIN_CONTRAST = 0.1


class ImageError(ValueError):
    """An image in which no digit can be found."""


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) in uint8 or [0, 1] -> float (H, W) in [0, 1]."""
    array = np.asarray(image)
    values = array.astype(float)
    if array.dtype == np.uint8 or (values.size and values.max() > 1.0):
        values = values / 255.0
    if values.ndim == 3 and values.shape[-1] == 4:  # transparency: composite onto white paper
        alpha = values[..., 3:4]
        values = values[..., :3] * alpha + (1.0 - alpha)
    if values.ndim == 3 and values.shape[-1] == 3:  # ITU-R 601 luma, as PIL's "L" mode
        values = values @ np.array([0.299, 0.587, 0.114])
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 2:
        raise ImageError(
            f"expected a 2-D image (H x W, optionally with channels), got shape {array.shape}"
        )
    return np.clip(values, 0.0, 1.0)


def to_mnist(image: np.ndarray) -> np.ndarray:
    """Any digit image -> float32 (28, 28) in [0, 1], light digit on dark, MNIST-style."""
    gray = to_grayscale(image)
    if gray.max() - gray.min() < MIN_CONTRAST:
        raise ImageError("the image is empty or all one colour: no digit to find")

    # Polarity: the border is background. MNIST's background is black.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = gray - background if background < 0.5 else background - gray
    ink = np.clip(ink, 0.0, None)
    if ink.max() < MIN_CONTRAST:
        raise ImageError("no digit stands out from the background")
    ink = ink / ink.max()

    # Crop to the digit.
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    digit = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    # Fit into a 20x20 box, keeping the aspect ratio.
    height, width = digit.shape
    scale = BOX / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    digit = resize(digit, new_h, new_w)

    # Place in 28x28 with the centre of mass at the centre (clipped to stay inside).
    canvas = np.zeros((SIZE, SIZE), dtype=float)
    ys, xs = np.indices(digit.shape)
    cy, cx = (ys * digit).sum() / digit.sum(), (xs * digit).sum() / digit.sum()
    top = int(np.clip(round(SIZE / 2 - cy - 0.5), 0, SIZE - new_h))
    left = int(np.clip(round(SIZE / 2 - cx - 0.5), 0, SIZE - new_w))
    canvas[top : top + new_h, left : left + new_w] = digit
    return np.clip(canvas, 0.0, 1.0).astype(np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-averaging resize (anti-aliased when shrinking, bilinear-like when growing)."""
    from PIL import Image

    shrinking = height < image.shape[0] or width < image.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image.astype(np.float32)).resize((width, height), method))


def batch_to_mnist(images: np.ndarray) -> np.ndarray:
    """An array of images -> float32 (N, 28, 28, 1), the models' input.

    Arrays already in MNIST's format (N x 28 x 28, light on dark) are only scaled; any
    other size is converted image by image with `to_mnist`."""
    array = np.asarray(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2 and array.shape == (SIZE, SIZE):
        array = array[np.newaxis]
    if array.ndim == 2 and array.shape[1] == SIZE * SIZE:
        array = array.reshape(-1, SIZE, SIZE)
    if array.ndim != 3 or 0 in array.shape:
        raise ImageError(
            f"expected images as N x H x W (or N x 28 x 28 x 1, or N x 784), "
            f"got shape {np.asarray(images).shape}"
        )
    scale = 255.0 if array.dtype == np.uint8 or array.max() > 1.0 else 1.0
    if array.shape[1:] == (SIZE, SIZE):
        return (array.astype(np.float32) / scale)[..., np.newaxis]
    return np.stack([to_mnist(img) for img in array])[..., np.newaxis]
