"""Turn any picture of a digit into what an MNIST model takes.

The rule lives in digit_experiments.core.preprocess, so that the folder data source
(core, which never imports this layer) trains on pictures made exactly as `digits
predict`, the served model and the web app read them; this module is the same rule under
its earlier name.
"""

from __future__ import annotations

from digit_experiments.core.preprocess import (
    BOX,
    INK_THRESHOLD,
    MIN_CONTRAST,
    SIZE,
    as_images,
    batch_to_mnist,
    light_on_dark,
    prepare,
    resize,
    to_grayscale,
    to_mnist,
)

__all__ = [
    "BOX",
    "INK_THRESHOLD",
    "MIN_CONTRAST",
    "SIZE",
    "as_images",
    "batch_to_mnist",
    "light_on_dark",
    "prepare",
    "resize",
    "to_grayscale",
    "to_mnist",
]
