"""Loading a trained model from wherever it is, in Keras' safe mode.

A model can be named by `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/MODEL_ID`,
`runs:/RUN_ID/model`, or a path to a `.h5` / `.keras` file. Files are always loaded in
safe mode: a model file cannot run code of its own (a Lambda layer carrying Python
bytecode is refused).
"""

from __future__ import annotations

from pathlib import Path

from digit_experiments.errors import ModelError

MODEL_SUFFIXES = {".h5", ".keras"}


def is_store_uri(uri: str) -> bool:
    """Whether `uri` names a model in an MLflow store (rather than a file)."""
    return uri.startswith(("models:/", "runs:/"))


def load_model(uri: str):
    """A keras.Model from a registry/run URI or a model file (safe mode, not compiled).
    A file never imports MLflow."""
    path = Path(uri).expanduser()
    if path.suffix in MODEL_SUFFIXES or path.exists():
        if not path.is_file():
            raise ModelError(f"{uri}: model file not found")
        if path.suffix not in MODEL_SUFFIXES:
            raise ModelError(f"{uri}: not a Keras model file (expected .h5 or .keras)")
        import keras

        try:
            return keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # noqa: BLE001 - Keras raises many kinds; all mean "refused"
            raise ModelError(f"{uri}: cannot load the model ({type(e).__name__}: {e})") from e
    if not is_store_uri(uri):
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


def export(model, out: Path) -> Path:
    """Write the model as .h5 (or .keras), loadable by plain Keras without this project."""
    out = Path(out)
    if out.suffix not in MODEL_SUFFIXES:
        raise ModelError(f"--out {out}: expected a .h5 or .keras file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out
