"""Shared fixtures: compose the real conf/, shrink it, and point MLflow at tmp_path.

Fast tests train on a class-balanced slice of the real bundled MNIST (2,000 training
images, 500 test images, 1 epoch); full-size runs are marked `slow`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from digit_experiments.train import CONF_DIR

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.train_limit=2000", "data.test_limit=500", "trainer.epochs=1"]


def compose_cfg(*overrides: str):
    """The real config, composed as Hydra would from the command line."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def small_cfg(store: Path, *overrides: str):
    """A small, quick run logging to the SQLite store in `store`."""
    return compose_cfg(*SMALL, f"tracking.uri=sqlite:///{store}/mlflow.db", *overrides)


def run_cli(
    *args: str,
    cwd: Path,
    env: dict | None = None,
    timeout: int = 300,
    python_flags: tuple[str, ...] = (),
):
    """`python -m digit_experiments.train ARGS` in a fresh process."""
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "digit_experiments.train", *args],
        cwd=cwd,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test writes into the repository or reads the user's MLflow settings."""
    for key in list(os.environ):
        if key.startswith("MLFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
