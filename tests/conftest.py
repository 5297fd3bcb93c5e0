"""Shared fixtures: compose the real conf/, shrink it, and point MLflow at tmp_path.

Fast tests train on a class-balanced slice of the real bundled MNIST (2,000 training
images, 500 test images, 1 epoch); full-size runs are marked `slow`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from digit_experiments.app.help import CONF_DIR
from digit_experiments.app.resolvers import register_resolvers
from digit_experiments.core.config import register_configs
from digit_experiments.errors import DigitsError

register_configs()  # the schemas conf/ names, as the entry point registers them
register_resolvers()
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
):
    """`python -m digit_experiments.train ARGS` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "digit_experiments.train", *args],
        cwd=cwd,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """`python -m digit_experiments.train ARGS`, started and left running (stderr into
    stdout), for tests that act on a run while it trains."""
    return subprocess.Popen(
        [sys.executable, "-m", "digit_experiments.train", *args],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# What a quick command must not import (nested imports count: sys.modules is read).
HEAVY = {"tensorflow", "keras", "mlflow"}


def run_cli_imports(
    *args: str,
    cwd: Path,
    env: dict | None = None,
    timeout: int = 300,
    module: str = "digit_experiments.train",
):
    """`python -m MODULE ARGS` (default: digit_experiments.train) in a fresh process, as
    run_cli, and the top-level packages it had imported when it exited (from its
    sys.modules, so an import made anywhere, by anyone, counts)."""
    with tempfile.TemporaryDirectory(prefix="modules-") as folder:
        report = Path(folder) / "modules.json"
        code = (
            "import atexit, json, runpy, sys\n"
            "def report():\n"
            f"    with open({str(report)!r}, 'w') as f:\n"
            "        json.dump(sorted({m.split('.')[0] for m in sys.modules}), f)\n"
            "atexit.register(report)\n"
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=cwd,
            env={**clean_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        imported = set(json.loads(report.read_text()))
    return result, imported


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    # As in an activated venv: mlflow's own subprocesses (uvicorn for serving) are found.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test writes into the repository or reads the user's MLflow settings."""
    for key in list(os.environ):
        if key.startswith("MLFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


# What a run logs once per epoch.
EPOCH_METRICS = {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds"}


@contextmanager
def working_in(folder: Path):
    """For a module-scoped fixture, what `_isolated` does for a test: `folder` as the
    working directory and no MLFLOW_* settings of the user's, undone afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            mp.delenv(key)
        yield


def all_artifacts(client, run_id: str, path: str = ""):
    """The path of every file a run has logged, folders walked."""
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            yield from all_artifacts(client, run_id, item.path)
        else:
            yield item.path


def http(url: str, body: dict | None = None) -> bytes:
    """GET (or POST a JSON body) and return the response body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process, timeout: float, exited, answer: bytes | None = None):
    """Poll `url` until it answers (with `answer`, when given); RuntimeError(exited())
    if `process` ends first, TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            body = http(url)
            if answer is None or body == answer:
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(exited())
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer in {timeout} s")
        time.sleep(0.25)


@contextmanager
def mlflow_process(*args: str, cwd: Path, timeout: float = 90, env: dict | None = None):
    """A real `mlflow ARGS --host 127.0.0.1 --port N` process; yields its base URL once
    /health answers, and stops it afterwards."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [str(mlflow_bin), *args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env={**clean_env(), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(
            f"{base}/health",
            process,
            timeout,
            lambda: f"mlflow {args[0]} exited: {process.stderr.read()[-3000:]}",
        )
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def require_system(binary: str, package: str, what: str | None = None, also_in=()) -> None:
    """Skip the test, with one line naming what to install, when a system program is
    missing (`binary` on the PATH or in one of the folders `also_in`); under CI=true fail
    instead: CI installs it (.ci/system-packages), so a skip there would hide a gap."""
    import shutil

    if shutil.which(binary) or any((Path(folder) / binary).exists() for folder in also_in):
        return
    message = f"needs {what or binary}: apt-get install {package}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: installed by .ci/system-packages)", pytrace=False)
    pytest.skip(message)


def needs_postgres() -> None:
    from digit_experiments.stack import postgres

    try:
        postgres.bin_dir()
    except DigitsError:  # StackError: no server binaries
        require_system("initdb", "postgresql", "PostgreSQL server binaries")


def stack_folder() -> Path:
    """A fresh folder for a stack, directly under /tmp: PostgreSQL, run as `postgres`
    when we are root, must reach it (pytest's tmp_path sits under a root-only folder),
    and Ray's socket paths stay short."""
    folder = Path(tempfile.mkdtemp(prefix="stack-", dir="/tmp"))
    folder.chmod(0o755)  # mkdtemp's 0700 would keep `postgres` out
    return folder
