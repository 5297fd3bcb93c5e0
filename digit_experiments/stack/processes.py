"""The processes of a stack: starting them detached, knowing them again, stopping them.

A component is known by its pid *and* its start time (from /proc), so that a pid the
system has since given to another program is never taken for ours, and never signalled.
Components run in their own session (`start_new_session`), started through a short-lived
launcher so they are never children of the caller: a test session or a shell that runs
`digits stack up` can exit, and nobody is left holding zombies. `down` then stops
exactly what `up` started: the session's leader first (so it can shut its children down
in order), then whatever is left in that session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

# Runs as `python -c LAUNCHER LOG CMD...`: starts CMD in a new session with its output
# appended to LOG, prints its pid and exits without waiting for it.
_LAUNCHER = (
    "import subprocess, sys\n"
    "with open(sys.argv[1], 'ab') as log:\n"
    "    p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log,\n"
    "                         stderr=subprocess.STDOUT, start_new_session=True)\n"
    "print(p.pid)\n"
)


def spawn(command: list[str], log: Path, env: dict[str, str], cwd: Path) -> int:
    """Start `command` detached, in its own session, output appended to `log`; its pid."""
    launched = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(log), *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if launched.returncode != 0:
        raise OSError(f"could not start {command[0]}: {launched.stderr.strip()[-500:]}")
    return int(launched.stdout.strip())


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), or None if no such process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def alive(pid: int | None, started: int | None) -> bool:
    """Whether `pid` runs and is still the process that started at `started`."""
    if not pid:
        return False
    fields = _stat(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc: the pid alone has to do
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    return started is None or int(fields[19]) == started


def session_members(session: int) -> list[int]:
    """The live processes of a session (its leader's pid), read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[3]) == session:
            members.append(int(entry.name))
    return members


def children(parent: int) -> list[int]:
    """The live processes whose parent is `parent` (PostgreSQL's run in sessions of
    their own), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def wait_gone(pids: Iterable[tuple[int, int | None]], timeout: float) -> bool:
    """Wait until none of the (pid, start time) pairs lives; False on timeout."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while any(alive(pid, started) for pid, started in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def stop_session(pid: int | None, started: int | None, timeout: float) -> None:
    """Stop a component started by `spawn`: SIGTERM to its leader (which stops its own
    children), then SIGKILL to whatever of its session still runs after `timeout`."""
    if not alive(pid, started):
        _kill_session(pid)
        return
    _signal(pid, signal.SIGTERM)
    if not wait_gone([(pid, started)], timeout):
        _signal(pid, signal.SIGKILL)
        wait_gone([(pid, started)], 10)
    _kill_session(pid)


def _kill_session(session: int | None) -> None:
    """SIGTERM, then SIGKILL, the processes left in `session` (its leader gone)."""
    if not session or not Path("/proc/self/stat").exists():
        return
    left = [(p, start_time(p)) for p in session_members(session)]
    for member, _ in left:
        _signal(member, signal.SIGTERM)
    if not wait_gone(left, 5):
        for member, started in left:
            if alive(member, started):
                _signal(member, signal.SIGKILL)
        wait_gone(left, 10)


def stop_pid(pid: int | None, started: int | None, timeout: float) -> None:
    """SIGTERM `pid` if it is still ours, SIGKILL after `timeout`, and wait for it."""
    if not alive(pid, started):
        return
    _signal(pid, signal.SIGTERM)
    if not wait_gone([(pid, started)], timeout):
        _signal(pid, signal.SIGKILL)
        wait_gone([(pid, started)], 10)


# --- ports -------------------------------------------------------------------------------

HOST = "127.0.0.1"


def port_free(port: int | None) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (as servers bind: reusing
    an address whose old connections linger in TIME_WAIT)."""
    if not port:
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(taken: set[int]) -> int:
    """A port on 127.0.0.1 that nothing listens on and that is not in `taken`."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


def answers(port: int | None, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    if not port:
        return False
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- logs --------------------------------------------------------------------------------


def log_size(path: Path) -> int:
    """Where a log ends now: what a start writes after this is that start's."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_since(path: Path, offset: int) -> str:
    """What `path` gained after `offset` (the output of one start)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def tail(path: Path, offset: int = 0, lines: int = 12) -> str:
    """The last lines written to `path` after `offset`, indented, for an error message."""
    text = log_since(path, offset).rstrip()
    if not text:
        return f"  ({path} is empty)"
    return "\n".join("  " + line for line in text.splitlines()[-lines:])
