"""The stack's PostgreSQL: the OS's own server binaries, a cluster in DIR/postgres.

Loopback only: it listens on 127.0.0.1 and opens no unix socket at all
(`unix_socket_directories = ''`), so nothing beyond 127.0.0.1 can reach it.

Who may connect (pg_hba.conf): the role `mlflow`, to the database `mlflow`, over
127.0.0.1, with `trust` (no password); nobody else, the superuser included (it is used
once, in single-user mode, to create that role and database). Why no password: the
mlflow server on 127.0.0.1 answers every local user without one anyway, so a password
would guard nothing that its HTTP port does not already give away; and the password
would have to sit in the backend URI, which shows in `ps` (the server's command line),
in stack.json and in `digits stack env` (where the project's redaction masks it, which
would break `eval "$(digits stack env)"`). `mlflow` is not a superuser, so trust gives
no way to run programs as the server's OS user.

PostgreSQL refuses to run as root: run as root, every PostgreSQL program runs as the OS
user `postgres` (Debian's package creates it), and the cluster's files belong to it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from digit_experiments.errors import StackError
from digit_experiments.stack import processes

ROLE = DATABASE = "mlflow"
OS_USER = "postgres"  # who runs PostgreSQL when we are root
PROGRAMS = ("initdb", "pg_ctl", "postgres")
INSTALL = (
    "needs PostgreSQL server binaries (initdb, pg_ctl, postgres): "
    "apt-get install postgresql (Debian/Ubuntu), dnf install postgresql-server (Fedora), "
    "brew install postgresql (macOS)"
)

HBA = f"""\
# Written by `digits stack`: only the role {ROLE}, only to the database {DATABASE}, only
# over loopback TCP. trust, not a password: see digit_experiments/stack/postgres.py.
host  {DATABASE}  {ROLE}  127.0.0.1/32  trust
"""
SETTINGS = """
# --- digits stack: loopback TCP only, no unix socket (the port is given at start) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 50
"""


def uri(port: int) -> str:
    """The backend store URI (psycopg2 named: with SQLAlchemy 2.1 a bare postgresql://
    means psycopg 3). The role goes in the query: a user@ in the URI would be masked by
    the project's redaction wherever it is printed."""
    return f"postgresql+psycopg2://127.0.0.1:{port}/{DATABASE}?user={ROLE}"


def bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres are: pg_config's bindir, else the newest
    /usr/lib/postgresql/*/bin (Debian), else the PATH."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found:
            candidates.append(Path(found))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: _version_key(p.parent.name), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in PROGRAMS):
            return folder
    raise StackError(INSTALL)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name)) or (0,)


def version(bindir: Path) -> str:
    """`postgres --version`'s number, e.g. 15.18."""
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    match = re.search(r"(\d+(?:\.\d+)*)", out)
    return match.group(1) if match else out.strip()


@dataclass(frozen=True)
class Runner:
    """How PostgreSQL's programs are run: as ourselves, or (as root) as `postgres`."""

    uid: int | None = None
    gid: int | None = None
    home: str | None = None

    @classmethod
    def for_us(cls) -> Runner:
        if os.geteuid() != 0:
            return cls()
        try:
            entry = pwd.getpwnam(OS_USER)
        except KeyError:
            raise StackError(
                "PostgreSQL refuses to run as root and there is no OS user "
                f"{OS_USER!r} to run it as: create one (useradd --system {OS_USER}) "
                "or run `digits stack` as a normal user"
            ) from None
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def own(self, path: Path) -> None:
        """Give `path` to the user PostgreSQL runs as."""
        if self.uid is not None:
            os.chown(path, self.uid, self.gid)

    def run(self, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"  # messages we read (and the cluster's locale) independent of ours
        if self.uid is not None:
            env.update(HOME=self.home or "/", USER=OS_USER, LOGNAME=OS_USER)
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[])
        return subprocess.run(
            command, env=env, cwd="/", capture_output=True, text=True, check=False, **kwargs
        )

    def check_reach(self, folder: Path) -> None:
        """As root, PostgreSQL runs as `postgres`, which must be able to reach `folder`."""
        if self.uid is None or self.run(["test", "-w", str(folder)], timeout=30).returncode == 0:
            return
        closed = next(
            (p for p in reversed(folder.parents) if p.is_dir() and not p.stat().st_mode & 0o001),
            None,
        )
        where = f" ({closed} is closed to other users)" if closed else ""
        raise StackError(
            f"PostgreSQL refuses to run as root, so it runs as the OS user {OS_USER}, which "
            f"cannot reach {folder}{where}: choose a --dir other users can pass through "
            "(e.g. under /srv or /tmp), or run `digits stack` as a normal user"
        )


def initialized(data: Path) -> bool:
    return (data / "PG_VERSION").is_file()


def init(data: Path, bindir: Path, runner: Runner, log: Path) -> None:
    """A new cluster in `data` with the role and database `mlflow` (the first `up` only).

    Built in a temporary folder beside `data` and renamed at the end: an `up` that fails
    half-way leaves no half-made cluster that later `up`s would take for a good one."""
    building = data.with_name(data.name + ".new")
    if building.exists():
        shutil.rmtree(building)
    building.mkdir(mode=0o700)
    runner.own(building)
    runner.check_reach(building)
    done = runner.run(
        [
            str(bindir / "initdb"),
            "--pgdata",
            str(building),
            "--username",
            "postgres",
            "--auth",
            "reject",
            "--encoding",
            "UTF8",
            "--no-locale",
        ],
        timeout=300,
    )
    _append(log, "initdb", done)
    if done.returncode != 0:
        raise StackError(f"initdb exited {done.returncode}")
    # The role and database, in single-user mode: no server, no connection, no password.
    done = runner.run(
        [str(bindir / "postgres"), "--single", "-D", str(building), "postgres"],
        input=f"CREATE ROLE {ROLE} LOGIN\nCREATE DATABASE {DATABASE} OWNER {ROLE}\n",
        timeout=300,
    )
    _append(log, "create role and database", done)
    if done.returncode != 0 or "ERROR:" in done.stderr + done.stdout:
        raise StackError(f"creating the role and database {DATABASE!r} failed")
    (building / "pg_hba.conf").write_text(HBA)
    with (building / "postgresql.conf").open("a") as conf:
        conf.write(SETTINGS)
    building.rename(data)


def _append(log: Path, step: str, done: subprocess.CompletedProcess) -> None:
    with log.open("a") as f:
        f.write(f"--- {step} (exit {done.returncode})\n{done.stdout}{done.stderr}")


def start(data: Path, bindir: Path, port: int, runner: Runner, log: Path) -> int:
    """Start the cluster on 127.0.0.1:`port`; the postmaster's pid once it accepts."""
    if not log.exists():
        log.touch()
    runner.own(log)
    runner.check_reach(data)
    done = runner.run(
        [
            str(bindir / "pg_ctl"),
            "--pgdata",
            str(data),
            "--log",
            str(log),
            "--wait",
            "--timeout",
            "60",
            "-o",
            f"-p {port}",
            "start",
        ],
        timeout=90,
    )
    if done.returncode != 0:
        last = (done.stdout + done.stderr).strip().splitlines()[-1:]
        raise StackError(f"pg_ctl start exited {done.returncode} ({' '.join(last)})")
    pid = postmaster_pid(data)
    if pid is None:
        raise StackError(f"postgres started but wrote no {data / 'postmaster.pid'}")
    return pid


def postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop(data: Path, bindir: Path, pid: int | None, started: int | None, runner: Runner) -> None:
    """`pg_ctl stop -m fast` (sessions cut, everything committed kept); signals if that
    fails; returns once the postmaster is gone."""
    if processes.alive(pid, started) and initialized(data):
        runner.run(
            [str(bindir / "pg_ctl"), "--pgdata", str(data), "--mode", "fast", "--wait", "stop"],
            timeout=90,
        )
    # Whatever pg_ctl could not do (no pid file, a hung server): SIGTERM is a smart
    # shutdown, SIGINT a fast one; SIGKILL last (the next start recovers from the WAL).
    processes.stop_pid(pid, started, timeout=30)
