"""A store's model found by a second process while this one imports TensorFlow.

`digits predict --model models:/NAME@ALIAS` spends about 1.3 s in MLflow (importing it,
importing and opening its SQLAlchemy store, resolving the alias) and about 3 s importing
TensorFlow, and neither needs the other. Threads do not overlap them (both are imports,
which hold the GIL); two processes do, on two cores. `load_model` runs this module as a
child that resolves the URI with MLflow (the same artifact download as
`mlflow.keras.load_model`, so an alias is followed to the version it names now) and
answers the local path of the model's `.keras` file, while the parent imports TensorFlow
and then loads that file in safe mode; the parent never imports MLflow. An error is the
child's, worded as the in-process loader (`loading.load_model`) words it. With one CPU,
or when the child gives no answer at all, everything runs in-process as before.

    python -m digit_experiments.inference.fetch MODEL_URI   # $MLFLOW_TRACKING_URI: the store
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from digit_experiments import errors
from digit_experiments.errors import DigitsError, ModelError
from digit_experiments.inference import loading
from digit_experiments.tracking import store


def load_model(model_uri: str, tracking_uri: str):
    """`loading.load_model(model_uri)` for a models:/ or runs:/ URI on the store at
    `tracking_uri`, MLflow's part in a child while TensorFlow is imported here."""
    if _cpus() > 1:
        child = Fetch(model_uri, tracking_uri)
        import keras  # noqa: F401 - TensorFlow's import, while the child works

        path = child.keras_file()
        if path is not None:
            return loading.load_model(path)
    # One CPU: the two would only take turns, the child's own start-up on top.
    store.connect(tracking_uri)
    return loading.load_model(model_uri)


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))  # those this process may run on
    return os.cpu_count() or 1


class Fetch:
    """A child process resolving one model URI; `keras_file()` waits for its answer."""

    def __init__(self, model_uri: str, tracking_uri: str):
        self.model_uri = model_uri
        # The package this process imported, wherever the child starts.
        package_root = str(Path(errors.__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            # In the environment, not the command line: a URI may carry credentials.
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, model_uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )

    def keras_file(self) -> str | None:
        """The model's .keras file; None if the child gave no answer (it crashed: the
        in-process loader will say what is wrong). Raises the error the child reports."""
        out, _ = self.process.communicate()
        try:
            answer = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None
        if "keras_file" in answer:
            return answer["keras_file"]
        kind = getattr(errors, answer.get("error", ""), None)
        if not (isinstance(kind, type) and issubclass(kind, DigitsError)):
            kind = ModelError
        raise kind(answer.get("message") or f"{self.model_uri}: cannot be loaded")


def keras_file(model_uri: str) -> str:
    """The local .keras file of a logged Keras model (downloaded first from a remote
    store), found as `mlflow.keras.load_model` finds it."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        folder = download_artifacts(artifact_uri=model_uri)
        flavor = Model.load(os.path.join(folder, "MLmodel")).flavors.get("keras")
    except MlflowException as e:
        raise ModelError(f"{model_uri}: {e.message}") from e
    except OSError as e:
        raise ModelError(f"{model_uri}: {e}") from e
    if flavor is None or flavor.get("save_exported_model"):
        raise ModelError(f"{model_uri}: not a Keras model saved as a .keras file")
    # Where mlflow.keras looks: FOLDER/<data>/model.keras, or FOLDER/<data>.keras.
    path = os.path.join(folder, flavor.get("data", "model"))
    if os.path.isdir(path):
        path = os.path.join(path, "model")
    return path + ".keras"


def main(model_uri: str) -> dict:
    """The child's answer: {"keras_file": PATH} or {"error": CLASS, "message": TEXT}."""
    try:
        store.connect(os.environ["MLFLOW_TRACKING_URI"])
        return {"keras_file": keras_file(model_uri)}
    except DigitsError as e:
        return {"error": type(e).__name__, "message": str(e)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
    os._exit(0)  # without Python's teardown of MLflow's modules (~0.5 s)
