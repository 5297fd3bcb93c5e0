"""What produced a run's numbers: the code's git commit and the library versions."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from digit_experiments.core.backend import keras_backend

# The checkout this code runs from (an editable install): its commit is the code's.
PROJECT_DIR = Path(__file__).resolve().parents[2]
# "tensorflow" stands for whichever backend Keras runs on (KERAS_BACKEND): a run on JAX
# records and requires jax, and needs no TensorFlow installed.
VERSIONED = ("tensorflow", "keras", "mlflow", "hydra-core", "numpy", "digit-experiments")
# Pinned in a logged model's requirements (skips MLflow's slow inference of them); pillow
# reads the pictures it serves. The served model also needs this project itself, which
# is not on PyPI: see inference/served.py.
LOGGED_REQUIREMENTS = ("tensorflow", "keras", "numpy", "mlflow", "pillow")


def _packages(names: tuple[str, ...]) -> list[str]:
    """`names` with "tensorflow" replaced by the backend's package (jax, torch, ...)."""
    backend = keras_backend()
    return [backend if name == "tensorflow" else name for name in names]


def git_commit(root: Path = PROJECT_DIR) -> str | None:
    """HEAD of the repository at root (with '-dirty' if it has uncommitted changes); None
    outside a git checkout (an installed wheel)."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def tags() -> dict[str, str]:
    """`git_commit` (when known) and `version.<package>` for each library that matters."""
    found = {}
    for name in _packages(VERSIONED):
        try:
            found[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. this project run from a checkout on PYTHONPATH, not installed
    commit = git_commit()
    if commit:
        found["git_commit"] = commit
    return found


def requirements() -> list[str]:
    """Pinned requirements for a logged model."""
    return [f"{name}=={metadata.version(name)}" for name in _packages(LOGGED_REQUIREMENTS)]
