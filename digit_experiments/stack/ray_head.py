"""The stack's Ray head, on 127.0.0.1, with its own token.

Loopback only: `--node-ip-address=127.0.0.1` alone still binds some of Ray's servers to
the machine's address, and a client given 127.0.0.1 swaps it for that address (Ray's
resolve_ip_for_localhost) and then finds nobody there; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
(Ray's local-only mode) makes the head and its clients keep to 127.0.0.1. So clients need
it too: `digits stack env` exports it.

Token authentication: Ray 2.60 turns it on for a head when ~/.ray/auth_token exists, but
a client given an explicit address (ray.init(address=...), RAY_ADDRESS) does not turn it
on by itself, and ~/.ray/auth_token is shared by every Ray on the machine. The stack
makes its own token (DIR/ray/auth_token, mode 0600, made once) and runs the head with
RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH pointing at it; clients get the same two
variables from `digits stack env`, and the head's workers inherit them from the raylet.

The head runs as `ray start --head --block` in its own session, so `down` stops exactly
it and its children; never `ray stop`, which stops every Ray of the user.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from digit_experiments.errors import StackError
from digit_experiments.stack import processes

READY = "Ray runtime started"  # what `ray start` prints once the head accepts clients
# Ray puts unix sockets at TEMP/session_<date>_<time>_<pid>/sockets/plasma_store, and
# such a path may be at most 107 bytes: a temp dir longer than this goes to /tmp.
MAX_TEMP_DIR = 40


def _bin() -> str:
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        raise StackError(f"ray is not installed beside {sys.executable}")
    return str(ray)


def token_path(folder: Path) -> Path:
    """DIR/ray/auth_token, made (256 random bits, mode 0600) the first time."""
    path = folder / "ray" / "auth_token"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def temp_dir(folder: Path, recorded: str | None) -> Path:
    """Ray's session folder: DIR/ray/tmp if its path is short enough for Ray's unix
    sockets, else a private folder under /tmp (recorded in stack.json and reused)."""
    inside = folder / "ray" / "tmp"
    if len(str(inside)) <= MAX_TEMP_DIR:
        inside.mkdir(parents=True, exist_ok=True)
        return inside
    if recorded and Path(recorded).is_dir() and Path(recorded).stat().st_uid == os.geteuid():
        return Path(recorded)
    return Path(tempfile.mkdtemp(prefix="digits-ray-", dir="/tmp"))


def client_env(port: int, token: Path) -> dict[str, str]:
    """What a process needs to join this head with ray.init(): its address, the token,
    and Ray's local-only mode (see the module's docstring)."""
    return {
        "RAY_ADDRESS": f"{processes.HOST}:{port}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


def start(
    port: int,
    client_port: int,
    agent_port: int,
    metric_ports: tuple[int, int],
    num_cpus: int,
    temp: Path,
    token: Path,
    log: Path,
) -> int:
    """Start the head, detached; its pid (the `ray start --block` process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(client_env(port, token))
    del env["RAY_ADDRESS"]  # a head starts a cluster, it does not join one
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # The autoscaler's and the dashboard's metrics servers take fixed ports (44217, 44227)
    # unless told otherwise: a second stack on the machine would find them taken.
    env["AUTOSCALER_METRIC_PORT"], env["DASHBOARD_METRIC_PORT"] = map(str, metric_ports)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [
        _bin(),
        "start",
        "--head",
        "--block",
        f"--node-ip-address={processes.HOST}",
        f"--port={port}",
        f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={agent_port}",
        f"--dashboard-host={processes.HOST}",
        "--include-dashboard=false",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
        "--log-style=record",
        "--log-color=false",
    ]
    return processes.spawn(command, log, env, cwd=temp)


def wait_ready(
    port: int, pid: int, started: int | None, log: Path, offset: int, timeout: float = 120
) -> None:
    """Return once the head says it started and its GCS port accepts connections."""
    deadline = time.monotonic() + timeout
    while not (READY in processes.log_since(log, offset) and processes.answers(port)):
        if not processes.alive(pid, started):
            raise StackError("ray start exited")
        if time.monotonic() > deadline:
            raise StackError(f"the Ray head did not start in {timeout:.0f} s")
        time.sleep(0.2)


def stop(pid: int | None, started: int | None) -> None:
    """SIGTERM to `ray start --block`: it drains the node (up to 30 s while tasks run)
    and stops its processes; SIGKILL for whatever of its session is left after that.
    (SIGTERM to the whole session at once kills the GCS first, and the drain then waits
    30 s for it in vain.)"""
    processes.stop_session(pid, started, timeout=45)
