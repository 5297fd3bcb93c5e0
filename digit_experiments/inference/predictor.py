"""One Predictor: a model loaded once, and everything between a picture and its digit.

    predictor = Predictor.load("models:/mnist-digit-classifier@champion")
    predictor.predict([image])                  # arrays (any size, either polarity)
    predictor.predict_files(["7.png", "batch.npy"])

`digits predict` uses it; so do the web app and the served model. A picture is turned
into the model's input by inference.preprocess, whose one rule holds for a PNG and an
array alike, so the two give the same answer for the same digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digit_experiments.core import preprocess
from digit_experiments.core.preprocess import decode_image, read_image
from digit_experiments.errors import ImageError, ModelError
from digit_experiments.inference.loading import load_model

# read_image, decode_image: an image file's pixels (core.preprocess), named here too.
__all__ = ["PictureFile", "Prediction", "Predictor", "decode_image", "read_image", "read_pictures"]

BATCH = 256


@dataclass
class Prediction:
    digit: int
    probability: float
    probabilities: np.ndarray  # one per class
    seen: np.ndarray  # the (H, W) image the model was given, in [0, 1]


class Predictor:
    def __init__(self, model, uri: str = ""):
        self.model = model
        self.uri = uri
        shape = tuple(model.input_shape)
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1:
            raise ModelError(
                f"{uri or 'model'}: expects input {shape}; a digit model takes square "
                "one-channel images (None, N, N, 1)"
            )
        self.size = int(shape[1])
        self.classes = int(model.output_shape[-1])

    @classmethod
    def load(cls, uri: str) -> Predictor:
        """Load the model at `uri` (any URI or file, safe mode) once."""
        return cls(load_model(uri), uri)

    def prepare(self, pictures) -> np.ndarray:
        """Pictures (a list of images, or an array of them) -> model input (N, S, S, 1)."""
        if isinstance(pictures, np.ndarray):
            return preprocess.batch_to_mnist(pictures, self.size)
        return np.stack([preprocess.prepare(p, self.size) for p in pictures])[..., np.newaxis]

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) for inputs already in the model's format.

        `predict_on_batch`, BATCH images at a time: the same traced function and numbers
        as Keras' `predict`, without the ~40 ms that `predict` spends on every call (a
        data adapter, callbacks, a progress bar) whatever the batch size, which is
        nearly all of the time a served request or a web app's drawing takes."""
        inputs = np.asarray(inputs, dtype=np.float32)
        if len(inputs) == 0:
            return np.zeros((0, self.classes), dtype=np.float32)
        return np.concatenate(
            [
                np.asarray(self.model.predict_on_batch(inputs[i : i + BATCH]))
                for i in range(0, len(inputs), BATCH)
            ]
        )

    def predict(self, pictures) -> list[Prediction]:
        return self._predictions(self.prepare(pictures))

    def predict_files(self, files: list[PictureFile]) -> list[tuple[str, Prediction]]:
        """(label, prediction) per picture of files `read_pictures` read: the file's name
        for an image, file[i] for each picture of a .npy array."""
        labels, batches = [], []
        for picture in files:
            try:
                if picture.is_batch:
                    batches.append(preprocess.batch_to_mnist(picture.pixels, self.size))
                    labels += [f"{picture.file}[{i}]" for i in range(len(batches[-1]))]
                else:
                    batches.append(preprocess.prepare(picture.pixels, self.size)[None, ..., None])
                    labels.append(str(picture.file))
            except ImageError as e:
                raise ImageError(f"{picture.file}: {e}") from None
        return list(zip(labels, self._predictions(np.concatenate(batches))))

    def _predictions(self, inputs: np.ndarray) -> list[Prediction]:
        return [
            Prediction(int(p.argmax()), float(p.max()), p, image[..., 0])
            for p, image in zip(self.probabilities(inputs), inputs)
        ]


@dataclass
class PictureFile:
    file: Path
    pixels: np.ndarray  # an image file's pixels, or a .npy file's array of pictures
    is_batch: bool


def read_pictures(files) -> list[PictureFile]:
    """Each file's pixels as read (before any preprocessing): refuses a file that is
    missing or that is neither an image nor a .npy array of pictures, by name."""
    pictures = []
    for file in map(Path, files):
        if not file.is_file():
            raise ImageError(f"{file}: file not found")
        if file.suffix.lower() != ".npy":
            pictures.append(PictureFile(file, read_image(file), is_batch=False))
            continue
        try:
            array = np.load(file, allow_pickle=False)
        except ValueError as e:  # a file that is not a .npy array, and the like
            raise ImageError(f"{file}: cannot read it as a .npy array ({e})") from e
        pictures.append(PictureFile(file, array, is_batch=True))
    return pictures
