"""DIR/stack.json: what `up` started (ports, pids, URIs, versions), for later processes.

`status`, `env` and `down` run in other processes than `up`: this file is how they know
the stack. It is rewritten atomically (a temporary file renamed over it), so a crash
mid-write leaves the previous state, never half a file. Ports stay in it after `down`,
so that the next `up` reuses them when they are still free (URIs do not change).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

from digit_experiments.errors import StackError

FILE = "stack.json"
FORMAT = 1  # bumped when the file's shape changes


def check_folder(folder: Path, create: bool) -> Path:
    """`folder` as an absolute path; a clear error if it cannot hold a stack."""
    folder = folder.expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise StackError(f"--dir {folder} is a file, not a folder")
    if not create:
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "logs").mkdir(exist_ok=True)
    except OSError as e:
        raise StackError(f"--dir {folder}: cannot create it ({e.strerror or e})") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StackError(f"--dir {folder} is not writable")
    return folder


def load(folder: Path) -> dict:
    """The recorded state ({} for a folder where no stack was ever started)."""
    path = folder / FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise StackError(f"{path} cannot be read ({e}); move it away to start afresh") from e
    if state.get("format") != FORMAT:
        raise StackError(f"{path} was written by another version of `digits stack`")
    return state


def save(folder: Path, state: dict) -> None:
    """Write the state atomically."""
    state["format"] = FORMAT
    fd, temporary = tempfile.mkstemp(prefix=".stack-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, folder / FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def locked(folder: Path):
    """Hold DIR/.lock: two `up`s (or an `up` and a `down`) never interleave."""
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
