"""Turn any picture of a digit into what an MNIST model takes (NumPy and PIL only).

MNIST was made like this (LeCun et al.): white digit on black, the digit's bounding box
scaled to fit a 20x20 box (keeping its aspect ratio), then placed in a 28x28 image so
that its centre of mass is at the centre. One rule, for a PNG and an array alike:

- pixel values as core.images reads them (integers 0-255, floats already in [0, 1]);
- polarity from the border: the border is background, and MNIST's background is black,
  so a dark digit on light paper is inverted;
- an image of the model's own size (28x28) is taken as framed, as MNIST's own digits
  are: only scale and polarity change; any other size is cropped to the digit, fitted
  into 20x20 and centred by its centre of mass (`to_mnist`).

So `digits predict`, the served model and the web app see what the model was trained on,
and the folder data source (core.folder) trains on pictures made by the same rule.
`read_image` and `decode_image` read an image file's pixels (PIL) for all of them.
"""

from __future__ import annotations

import numpy as np

from digit_experiments.core.images import to_unit_range
from digit_experiments.errors import ImageError

SIZE = 28
BOX = 20
# A pixel is ink when it is this far (0..1) from the background level.
INK_THRESHOLD = 0.2
# Below this contrast an image is "all one colour": there is no digit to find.
MIN_CONTRAST = 0.1


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) pixels (by core.images' rule) -> float
    (H, W) in [0, 1]."""
    array = np.asarray(image)
    values = to_unit_range(array).astype(float)
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


def prepare(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """One picture of a digit -> float32 (size, size) in [0, 1], light digit on dark: an
    image of that size already is framed (scale and polarity only), any other is made
    MNIST-style by `to_mnist`."""
    ink = light_on_dark(to_grayscale(image))
    if ink.shape == (size, size):
        return ink.astype(np.float32)
    return _frame(ink, size)


def light_on_dark(gray: np.ndarray) -> np.ndarray:
    """The image with its background black: inverted if the border is light."""
    if gray.max() - gray.min() < MIN_CONTRAST:
        raise ImageError("the image is empty or all one colour: no digit to find")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = gray - background if background < 0.5 else background - gray
    ink = np.clip(ink, 0.0, 1.0)
    if ink.max() < MIN_CONTRAST:
        raise ImageError("no digit stands out from the background")
    return ink


def to_mnist(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Any digit image -> float32 (size, size) in [0, 1], light digit on dark, MNIST-style:
    cropped to the digit, fitted into a box of 20/28 of the side, centred by mass."""
    return _frame(light_on_dark(to_grayscale(image)), size)


def _frame(ink: np.ndarray, size: int) -> np.ndarray:
    ink = ink / ink.max()
    box = max(1, round(size * BOX / SIZE))

    # Crop to the digit.
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    digit = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    # Fit into the box, keeping the aspect ratio.
    height, width = digit.shape
    scale = box / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    digit = resize(digit, new_h, new_w)

    # Place with the centre of mass at the centre (clipped to stay inside).
    canvas = np.zeros((size, size), dtype=float)
    ys, xs = np.indices(digit.shape)
    cy, cx = (ys * digit).sum() / digit.sum(), (xs * digit).sum() / digit.sum()
    top = int(np.clip(round(size / 2 - cy - 0.5), 0, size - new_h))
    left = int(np.clip(round(size / 2 - cx - 0.5), 0, size - new_w))
    canvas[top : top + new_h, left : left + new_w] = digit
    return np.clip(canvas, 0.0, 1.0).astype(np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-averaging resize (anti-aliased when shrinking, bilinear-like when growing)."""
    from PIL import Image

    shrinking = height < image.shape[0] or width < image.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image.astype(np.float32)).resize((width, height), method))


def as_images(array: np.ndarray, size: int = SIZE) -> np.ndarray:
    """An array of pictures in any of the usual layouts -> (N, H, W): N x H x W,
    N x H x W x 1, N x size*size (flattened), or one H x W picture."""
    original = np.asarray(array)
    images = original
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 2 and images.shape[1] == size * size:
        images = images.reshape(-1, size, size)
    elif images.ndim == 2:
        images = images[np.newaxis]
    if images.ndim != 3 or 0 in images.shape:
        raise ImageError(
            f"expected images as N x H x W (or N x {size} x {size} x 1, N x {size * size}, "
            f"or one H x W picture), got shape {original.shape}"
        )
    return images


def batch_to_mnist(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """An array of pictures -> float32 (N, size, size, 1), the models' input, each by the
    rule of `prepare`."""
    images = as_images(images, size)
    return np.stack([prepare(image, size) for image in images])[..., np.newaxis]


# --- image files ----------------------------------------------------------------------


def read_image(file) -> np.ndarray:
    """The pixels of an image file (PNG, JPEG, ...), as read, before any preprocessing.
    Raises ImageError naming the file if it is not an image."""
    try:
        return _pixels(file)
    except ImageError as e:
        raise ImageError(f"{file}: not an image file (PNG, JPEG, ...) or a .npy array") from e


def decode_image(data: bytes) -> np.ndarray:
    """The pixels of an image file's bytes (PNG, JPEG, ...), as `read_image` reads a file."""
    import io

    return _pixels(io.BytesIO(data))


def _pixels(source) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image.load()
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError("not an image file (PNG, JPEG, ...)") from e
