"""The stack's mlflow server: runs in PostgreSQL, artifacts proxied into DIR/artifacts.

Proxied artifacts (`--artifacts-destination`): clients send and fetch artifacts through
the server's HTTP API, so a job needs only MLFLOW_TRACKING_URI, never a path or bucket.

MLflow 3 starts a job runner with its huey consumers beside the server (~1.4 GB more);
nothing here uses server-side jobs, so MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false keeps it
off (the variable `mlflow server` reads in mlflow/server/__init__.py). One uvicorn
worker: ~0.5 GB with the `mlflow server` process that supervises it, started in about
5 s; each further worker adds ~0.25 GB and start-up time on a small machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from digit_experiments.errors import StackError
from digit_experiments.stack import processes

WORKERS = 1


def _bin() -> str:
    """The venv's `mlflow`, beside this Python (no PATH lookup, no in-process import:
    importing MLflow would make `digits stack status` take seconds)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    if not mlflow.exists():
        raise StackError(f"mlflow is not installed beside {sys.executable}")
    return str(mlflow)


def environment() -> dict[str, str]:
    """The server's environment: ours without MLFLOW_* settings meant for clients (a
    tracking URI or credentials in the caller's shell are not the server's business)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def upgrade(backend_uri: str, log: Path) -> None:
    """`mlflow db upgrade`: create or migrate the tables, as its own step (the server
    refuses a database whose schema is behind the installed MLflow)."""
    with log.open("ab") as out:
        done = subprocess.run(
            [_bin(), "db", "upgrade", backend_uri],
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        raise StackError(f"mlflow db upgrade exited {done.returncode}")


def start(backend_uri: str, artifacts: Path, port: int, log: Path, workers: int = WORKERS) -> int:
    """Start `mlflow server` on 127.0.0.1:`port`, detached; its pid."""
    command = [
        _bin(),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        processes.HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return processes.spawn(command, log, environment(), cwd=artifacts.parent)


def url(port: int) -> str:
    return f"http://{processes.HOST}:{port}"


def healthy(port: int | None, timeout: float = 2.0) -> bool:
    """Whether the server on `port` answers /health."""
    if not port:
        return False
    try:
        with urllib.request.urlopen(f"{url(port)}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(port: int, pid: int, started: int | None, timeout: float = 120) -> None:
    """Return once /health answers; an error if the server exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not healthy(port):
        if not processes.alive(pid, started):
            raise StackError("mlflow server exited")
        if time.monotonic() > deadline:
            raise StackError(f"mlflow server did not answer {url(port)}/health in {timeout:.0f} s")
        time.sleep(0.2)


def stop(pid: int | None, started: int | None) -> None:
    """SIGTERM to `mlflow server` (it passes it on to uvicorn), SIGKILL what is left."""
    processes.stop_session(pid, started, timeout=30)
