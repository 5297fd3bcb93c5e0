"""The served model: pictures in, digits out. What `mlflow models serve` and
`mlflow.pyfunc.load_model` run for every model a training run logs (its
`python_function` flavor, whose loader_module is this module):

    request   {"dataframe_records": [{"image": "<base64 of a PNG or JPEG file>"}, ...]}
    response  {"predictions": [{"digit": 7, "probabilities": [10 floats]}, ...]}

A Predictor does the work, so a served picture is read by inference.preprocess's rule
(any size, either polarity) and gets the answer `digits predict` gives. The same model
folder keeps its `keras` flavor: `mlflow.keras.load_model(uri)` gives the network itself,
for arrays already in MNIST format (N, 28, 28, 1), which the served model no longer takes.

The signature declares `image` binary: the scoring server base64-decodes it before
`predict`; in-process, `predict` takes the bytes or their base64 text.

MLflow imports this module by name, so whatever serves the model needs this project
installed: `--env-manager local` from the project's environment has it; an environment
MLflow builds from the model's requirements.txt (`--env-manager virtualenv`/`conda`, or
`mlflow models build-docker`) does not, until this project is installed into it too.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile

import numpy as np

from digit_experiments.errors import ImageError
from digit_experiments.inference.loading import load_model
from digit_experiments.inference.predictor import Predictor, decode_image

COLUMN = "image"
EXAMPLES = 2  # pictures in the logged input example


class PictureModel:
    """The pyfunc model: a table with an `image` column of image files' bytes (or their
    base64 text) -> a table of `digit` and `probabilities`, a row per picture."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def predict(self, model_input, params=None):
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if COLUMN not in frame.columns:
            raise _bad_input(
                f"no '{COLUMN}' column (got {list(map(str, frame.columns))}): send "
                f'{{"dataframe_records": [{{"{COLUMN}": "<base64 of a PNG or JPEG file>"}}]}}'
            )
        inputs = [self._prepare(i, value) for i, value in enumerate(frame[COLUMN])]
        size = self.predictor.size
        inputs = np.concatenate(inputs) if inputs else np.zeros((0, size, size, 1), np.float32)
        probabilities = self.predictor.probabilities(inputs)
        return pd.DataFrame(
            {
                "digit": probabilities.argmax(axis=1).astype(np.int64),
                "probabilities": [p.astype(np.float64).tolist() for p in probabilities],
            }
        )

    def _prepare(self, i: int, value) -> np.ndarray:
        """Row i's image file -> the model's input (1, S, S, 1), by the Predictor's rule."""
        try:
            return self.predictor.prepare([_picture(value)])
        except ImageError as e:
            raise _bad_input(f"{COLUMN} {i}: {e}") from None


def _picture(value) -> np.ndarray:
    """An image file's bytes (or, in-process, their base64 text) -> its pixels."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ImageError(f"not base64 text ({value[:20]!r}...)") from None
    if not isinstance(value, (bytes, bytearray)):
        raise ImageError(
            f"expected an image file's bytes (base64 in JSON), got {type(value).__name__} "
            f"{str(value)[:20]!r}. The served model reads pictures; for arrays already in "
            "MNIST format use the Keras network: mlflow.keras.load_model(<this model's URI>)"
        )
    try:
        return decode_image(bytes(value))
    except ImageError as e:
        raise ImageError(f"{e}; its first bytes are {bytes(value[:12])!r}") from None


def _bad_input(message: str):
    """The error for input that is not pictures: an MlflowException with this code is what
    the scoring server answers with HTTP 400 and the message (any other exception becomes
    a generic message and a traceback). A missing `image` column, or text that is not
    base64, the server refuses itself (400, its message names the column)."""
    from mlflow.exceptions import MlflowException

    class BadInput(MlflowException):
        # The scoring server rewrites a model's message as "Failed to predict data '<the
        # request, printed>'. Error: <message>": for a batch, or an array sent where
        # pictures belong, kilobytes before the one line that says what is wrong. The
        # message stays as said (and should MLflow stop doing so, nothing changes).
        @property
        def message(self) -> str:
            return self.__dict__["said"]

        @message.setter
        def message(self, value: str) -> None:
            self.__dict__.setdefault("said", value)

    return BadInput.invalid_parameter_value(message)


def _load_pyfunc(path: str) -> PictureModel:
    """MLflow's loader-module entry point: `path` is the flavor's data, the .keras file
    (loaded in safe mode)."""
    predictor = Predictor(load_model(path), path)
    # Trace the network now for one picture and for any other batch size (Keras retraces
    # once, for a batch of unknown size), so that no request waits for it.
    for n in (1, 2):
        predictor.probabilities(np.zeros((n, predictor.size, predictor.size, 1), np.float32))
    return PictureModel(predictor)


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, COLUMN)]),
        outputs=Schema(
            [ColSpec(DataType.long, "digit"), ColSpec(Array(DataType.double), "probabilities")]
        ),
    )


def png(image: np.ndarray) -> bytes:
    """A (H, W) or (H, W, 1) picture, values in [0, 1] or 0-255, as PNG bytes."""
    import io

    from PIL import Image

    pixels = np.asarray(image)
    pixels = pixels[..., 0] if pixels.ndim == 3 else pixels
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def save_model(path, model, examples: np.ndarray, mlflow_model=None, pip_requirements=None):
    """Write the MLflow model folder at `path`: the `keras` flavor as mlflow.keras writes
    it, and the `python_function` flavor that serves pictures from the same .keras file,
    with the signature above and `examples` (MNIST-format arrays) as a PNG input example."""
    import mlflow.keras
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import Model, infer_signature

    mlflow_model = mlflow_model or Model()
    with tempfile.TemporaryDirectory(prefix="digits-keras-") as tmp:
        network = infer_signature(examples[:1], np.zeros((1, int(model.output_shape[-1]))))
        mlflow.keras.save_model(
            model,
            tmp,
            mlflow_model=mlflow_model,
            signature=network,
            pip_requirements=pip_requirements,
        )
        # The keras flavor reads <its data folder>/model.keras; pyfunc copies its data
        # to data/<name>, so with the flavor's data "data" both read the one file.
        data = mlflow_model.flavors["keras"]["data"]
        keras_file = os.path.join(tmp, data, "model.keras")
        if data != "data" or not os.path.isfile(keras_file):
            raise RuntimeError(f"mlflow.keras.save_model wrote no {keras_file}: layout changed")
        example = pd.DataFrame({COLUMN: [png(image) for image in examples[:EXAMPLES]]})
        mlflow.pyfunc.save_model(
            path,
            loader_module=__name__,
            data_path=keras_file,
            mlflow_model=mlflow_model,
            signature=signature(),
            input_example=example,
            pip_requirements=pip_requirements,
        )
