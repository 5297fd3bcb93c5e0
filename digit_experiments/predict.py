"""Using a trained model: load it from wherever it is, read images, predict digits.

A model can be named by `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/MODEL_ID`,
`runs:/RUN_ID/model`, or a path to a `.h5` / `.keras` file. Files are always loaded in
Keras' safe mode: a model file cannot run code of its own (a Lambda layer carrying
Python bytecode is refused).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digit_experiments.preprocess import ImageError, batch_to_mnist, to_mnist

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MODEL_SUFFIXES = {".h5", ".keras"}


class ModelError(Exception):
    """A model that cannot be found or loaded."""


def load_model(uri: str):
    """A keras.Model from a registry/run URI or a model file (safe mode)."""
    import keras

    path = Path(uri).expanduser()
    if path.suffix in MODEL_SUFFIXES or path.exists():
        if not path.is_file():
            raise ModelError(f"{uri}: model file not found")
        if path.suffix not in MODEL_SUFFIXES:
            raise ModelError(f"{uri}: not a Keras model file (expected .h5 or .keras)")
        try:
            return keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # noqa: BLE001 - Keras raises many kinds; all mean "refused"
            raise ModelError(f"{uri}: cannot load the model ({type(e).__name__}: {e})") from e
    if not uri.startswith(("models:/", "runs:/")):
        raise ModelError(f"{uri}: not a file, and not a models:/ or runs:/ URI")
    import mlflow.keras
    from mlflow.exceptions import MlflowException

    try:
        # compile=False: only inference is needed, and the saved optimizer state is not.
        return mlflow.keras.load_model(uri, load_model_kwargs={"compile": False, "safe_mode": True})
    except MlflowException as e:
        raise ModelError(f"{uri}: {e.message}") from e
    except OSError as e:
        raise ModelError(f"{uri}: {e}") from e


def read_inputs(files: list[Path]) -> tuple[list[str], np.ndarray]:
    """Labels (one per image) and the images as model input (N, 28, 28, 1)."""
    labels, batches = [], []
    for file in files:
        file = Path(file)
        if not file.is_file():
            raise ImageError(f"{file}: file not found")
        try:
            if file.suffix.lower() == ".npy":
                images = batch_to_mnist(np.load(file, allow_pickle=False))
                labels += [f"{file}[{i}]" for i in range(len(images))]
            else:
                images = to_mnist(_read_image(file))[np.newaxis, ..., np.newaxis]
                labels.append(str(file))
        except ImageError as e:
            raise ImageError(f"{file}: {e}") from e
        except ValueError as e:  # np.load on a non-array file, and the like
            raise ImageError(f"{file}: cannot read it as a .npy array ({e})") from e
        batches.append(images)
    return labels, np.concatenate(batches)


def _read_image(file: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.load()
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError("not an image file (PNG, JPEG, ...) or a .npy array") from e


def predict(model, images: np.ndarray) -> np.ndarray:
    """Class probabilities, (N, 10)."""
    return np.asarray(model.predict(images, batch_size=256, verbose=0))


def export(model, out: Path) -> Path:
    """Write the model as .h5 (or .keras), loadable by plain Keras without this project."""
    out = Path(out)
    if out.suffix not in MODEL_SUFFIXES:
        raise ModelError(f"--out {out}: expected a .h5 or .keras file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out
