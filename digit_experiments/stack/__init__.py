"""A local team stack on 127.0.0.1: PostgreSQL, an mlflow server and a Ray head.

    stack = Stack(".stack")
    stack.up()            # returns once every component answers
    stack.env()           # MLFLOW_TRACKING_URI, RAY_ADDRESS, ... for clients
    stack.status()        # each component: up or down, port, pid, data folder
    stack.down()          # stops everything it started; the data stays in the folder

Everything lives in one folder: postgres/ (the database), artifacts/ (what runs log),
ray/ (the Ray token, and Ray's session files when the path is short), logs/, and
stack.json (ports, pids, URIs, versions). The components are real programs run as
subprocesses (`mlflow` and `ray` from this venv, PostgreSQL from the OS): nothing here
imports MLflow or Ray, so `digits stack status` answers at once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from digit_experiments.errors import StackError
from digit_experiments.stack import postgres, processes, ray_head, server, state

__all__ = ["COMPONENTS", "ComponentStatus", "Stack", "StackError"]

COMPONENTS = ("postgres", "mlflow", "ray")
# Every port a stack records (each component's main one, and Ray's others).
PORT_KEYS = (
    "port",
    "client_port",
    "agent_port",
    "autoscaler_metric_port",
    "dashboard_metric_port",
)
LOGS = {
    "postgres": "postgres.log",
    "mlflow": "mlflow-server.log",
    "ray": "ray-head.log",
}


@dataclass(frozen=True)
class ComponentStatus:
    """One component as `status` sees it."""

    name: str
    up: bool
    port: int | None
    pid: int | None
    data: Path | None
    address: str | None = None  # what clients use (URI or host:port)

    def line(self) -> str:
        return (
            f"{self.name:<9} {'up' if self.up else 'down':<5} "
            f"port {self.port or '-':<6} pid {self.pid if self.up else '-':<8} "
            f"data {self.data or '-'}" + (f"  {self.address}" if self.address else "")
        )


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


class Stack:
    """The stack whose state lives in `folder` (created by the first `up`)."""

    def __init__(self, folder: str | os.PathLike, echo: Callable[[str], None] | None = None):
        self.folder = state.check_folder(Path(folder), create=False)
        self.echo = echo or (lambda message: None)
        self._clock = lambda: 0.0  # seconds since `up` began

    # --- paths ---------------------------------------------------------------------------

    @property
    def data(self) -> Path:
        return self.folder / "postgres"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    @property
    def started(self) -> bool:
        """Whether a stack was ever started in the folder."""
        return (self.folder / state.FILE).is_file()

    def log(self, component: str) -> Path:
        return self.folder / "logs" / LOGS[component]

    # --- up ------------------------------------------------------------------------------

    def up(self, ray: bool = True, num_cpus: int | None = None) -> None:
        """Start what is not running (PostgreSQL, then the mlflow server; the Ray head
        in parallel with both) and return once all of them answer. A component that
        fails: whatever this call started is stopped again, and the StackError names
        the component and ends with the last lines of its log."""
        state.check_folder(self.folder, create=True)
        with state.locked(self.folder):
            recorded = state.load(self.folder)
            running = {c.name for c in self._status(recorded) if c.up}
            # --no-ray starts no Ray head, and leaves a running one running.
            wanted = ["postgres", "mlflow"] + (["ray"] if ray or "ray" in running else [])
            if set(wanted) <= running:
                self.echo(f"the stack in {self.folder} is already up")
                return
            started: list[str] = []
            began = time.monotonic()
            self._clock = lambda: time.monotonic() - began
            try:
                self._up(recorded, wanted, running, started, num_cpus)
            except BaseException:
                self._stop(recorded, reversed(started))
                state.save(self.folder, recorded)
                raise
            state.save(self.folder, recorded)
            self.echo(f"the stack in {self.folder} is up ({time.monotonic() - began:.1f} s)")

    def _up(self, recorded, wanted, running, started, num_cpus) -> None:
        taken = {
            entry.get(key)
            for entry in recorded.values()
            if isinstance(entry, dict)
            for key in PORT_KEYS
        } - {None}

        def port(entry: dict, key: str = "port") -> int:
            # The port of the last `up` if it is still free: URIs stay the same.
            if not processes.port_free(entry.get(key)):
                entry[key] = processes.free_port(taken)
            taken.add(entry[key])
            return entry[key]

        recorded.setdefault("dir", str(self.folder))
        pg = recorded.setdefault("postgres", {})
        mlflow = recorded.setdefault("mlflow", {})
        head = recorded.setdefault("ray", {})
        head["wanted"] = "ray" in wanted

        if "postgres" not in running:
            # What can be known before anything starts: the binaries, who runs them.
            with self._starting("postgres"):
                bindir = postgres.bin_dir()
                runner = postgres.Runner.for_us()

        # Ray's head starts first and takes longest (~6 s): the rest starts meanwhile.
        ray_offset = 0
        if "ray" in wanted and "ray" not in running:
            with self._starting("ray"):
                log = self.log("ray")
                ray_offset = processes.log_size(log)
                head.update(
                    temp_dir=str(ray_head.temp_dir(self.folder, head.get("temp_dir"))),
                    token=str(ray_head.token_path(self.folder)),
                    num_cpus=num_cpus or head.get("num_cpus") or os.cpu_count() or 1,
                    version=_version("ray"),
                    log=str(log),
                )
                head["pid"] = ray_head.start(
                    port(head),
                    port(head, "client_port"),
                    port(head, "agent_port"),
                    (port(head, "autoscaler_metric_port"), port(head, "dashboard_metric_port")),
                    head["num_cpus"],
                    Path(head["temp_dir"]),
                    Path(head["token"]),
                    log,
                )
                head["started"] = processes.start_time(head["pid"])
                head["address"] = f"{processes.HOST}:{head['port']}"
                started.append("ray")
                state.save(self.folder, recorded)  # a crash from here on: `down` knows it

        if "postgres" not in running:
            with self._starting("postgres"):
                log = self.log("postgres")
                if not postgres.initialized(self.data):
                    self.echo(f"postgres: a new database cluster in {self.data}")
                    postgres.init(self.data, bindir, runner, log)
                    mlflow.pop("schema_version", None)  # a new database: tables to make
                pg.update(
                    data=str(self.data),
                    bin_dir=str(bindir),
                    os_user=postgres.OS_USER if runner.uid is not None else None,
                    version=postgres.version(bindir),
                    log=str(log),
                )
                pg["pid"] = postgres.start(self.data, bindir, port(pg), runner, log)
                pg["started"] = processes.start_time(pg["pid"])
                pg["backend_store_uri"] = postgres.uri(pg["port"])
                started.append("postgres")
                state.save(self.folder, recorded)
                self._done("postgres", pg)

        if "mlflow" in running and mlflow.get("backend_store_uri") != pg["backend_store_uri"]:
            # PostgreSQL came back on another port: the server must follow it.
            server.stop(mlflow.get("pid"), mlflow.get("started"))
            running.discard("mlflow")
        if "mlflow" not in running:
            with self._starting("mlflow", upgrade=True):
                uri = pg["backend_store_uri"]
                self.artifacts.mkdir(exist_ok=True)
                version = _version("mlflow")
                # Only when the database is new or MLflow changed: it takes ~3 s.
                if mlflow.get("schema_version") != version:
                    server.upgrade(uri, self.folder / "logs" / "mlflow-db-upgrade.log")
                    mlflow["schema_version"] = version
                log = self.log("mlflow")
                mlflow.update(
                    artifacts=str(self.artifacts),
                    backend_store_uri=uri,
                    version=version,
                    workers=server.WORKERS,
                    log=str(log),
                )
                mlflow["pid"] = server.start(uri, self.artifacts, port(mlflow), log)
                mlflow["started"] = processes.start_time(mlflow["pid"])
                mlflow["uri"] = server.url(mlflow["port"])
                started.append("mlflow")
                state.save(self.folder, recorded)
                server.wait_healthy(mlflow["port"], mlflow["pid"], mlflow["started"])
                self._done("mlflow", mlflow, mlflow["uri"])

        if "ray" in started:
            with self._starting("ray", offset=ray_offset):
                ray_head.wait_ready(
                    head["port"], head["pid"], head["started"], self.log("ray"), ray_offset
                )
                self._done("ray", head, head["address"])

    def _done(self, component: str, entry: dict, address: str | None = None) -> None:
        where = address or f"{processes.HOST}:{entry['port']}"
        self.echo(f"{component:<9} up  {where}  pid {entry['pid']}  ({self._clock():.1f} s)")

    @contextlib.contextmanager
    def _starting(self, component: str, offset: int | None = None, upgrade: bool = False):
        """Turn a failure into one StackError naming `component`, with its log's end."""
        log = self.log(component)
        if offset is None:
            offset = processes.log_size(log)
        upgrade_log = self.folder / "logs" / "mlflow-db-upgrade.log"
        upgrade_offset = processes.log_size(upgrade_log)
        try:
            yield
        except (StackError, OSError, ValueError) as e:
            if (
                upgrade
                and processes.log_size(upgrade_log) > upgrade_offset
                and not (processes.log_size(log) > offset)
            ):
                log, offset = upgrade_log, upgrade_offset
            message = f"{component} failed to start: {e}"
            if processes.log_size(log) > offset:  # what it said itself, if anything
                message += f"\nlast lines of {log}:\n" + processes.tail(log, offset)
            raise StackError(message) from e

    # --- down ----------------------------------------------------------------------------

    def down(self) -> None:
        """Stop the server, the Ray head and PostgreSQL, and return once their processes
        are gone. Idempotent; the data stays (an `up` later finds the same runs)."""
        if not self.started:
            self.echo(f"no stack in {self.folder}: nothing to stop")
            return
        with state.locked(self.folder):
            recorded = state.load(self.folder)
            began = time.monotonic()
            stopped = self._stop(recorded, ["mlflow", "ray", "postgres"])
            state.save(self.folder, recorded)
        if stopped:
            self.echo(
                f"stopped {', '.join(stopped)} ({time.monotonic() - began:.1f} s); "
                f"the data stays in {self.folder}"
            )
        else:
            self.echo(f"the stack in {self.folder} was not running")

    def restart(self, component: str, pause: float = 0.0) -> None:
        """Stop one component (`postgres`, `mlflow` or `ray`), the others running on,
        and start it again after `pause` seconds: what an upgrade or a crash does to a
        team's server, and what the fault tests do to a sweep."""
        if component not in ("postgres", "mlflow", "ray"):
            raise StackError(f"no component {component!r}: postgres, mlflow or ray")
        with state.locked(self.folder):
            recorded = state.load(self.folder)
            self._stop(recorded, [component])
            state.save(self.folder, recorded)
        time.sleep(pause)
        self.up(ray="ray" in recorded)

    def _stop(self, recorded: dict, components) -> list[str]:
        stopped = []
        for name in components:
            entry = recorded.get(name) or {}
            pid, started = entry.get("pid"), entry.get("started")
            if not pid:
                continue
            if processes.alive(pid, started):
                stopped.append(name)
            if name == "postgres":
                as_os_user = entry.get("os_user") and os.geteuid() == 0
                runner = postgres.Runner.for_us() if as_os_user else postgres.Runner()
                postgres.stop(Path(entry["data"]), Path(entry["bin_dir"]), pid, started, runner)
            elif name == "mlflow":
                server.stop(pid, started)
            else:
                ray_head.stop(pid, started)
            entry["pid"] = entry["started"] = None
        return stopped

    # --- status and env ------------------------------------------------------------------

    def status(self) -> list[ComponentStatus]:
        """Each component of the stack: up (its process runs and its port answers) or
        down, with its port, pid and data folder. Ray only if it is part of the stack."""
        return self._status(state.load(self.folder) if self.folder.is_dir() else {})

    def _status(self, recorded: dict) -> list[ComponentStatus]:
        pg, mlflow, head = (recorded.get(name) or {} for name in COMPONENTS)
        found = [
            ComponentStatus(
                "postgres",
                processes.alive(pg.get("pid"), pg.get("started"))
                and processes.answers(pg.get("port")),
                pg.get("port"),
                pg.get("pid"),
                self.data,
            ),
            ComponentStatus(
                "mlflow",
                processes.alive(mlflow.get("pid"), mlflow.get("started"))
                and server.healthy(mlflow.get("port")),
                mlflow.get("port"),
                mlflow.get("pid"),
                self.artifacts,
                mlflow.get("uri"),
            ),
        ]
        if head.get("wanted", not recorded):
            found.append(
                ComponentStatus(
                    "ray",
                    processes.alive(head.get("pid"), head.get("started"))
                    and processes.answers(head.get("port")),
                    head.get("port"),
                    head.get("pid"),
                    Path(head["temp_dir"]) if head.get("temp_dir") else None,
                    head.get("address"),
                )
            )
        return found

    def is_up(self) -> bool:
        return all(c.up for c in self.status())

    def env(self) -> dict[str, str]:
        """What clients need, as environment variables: MLFLOW_TRACKING_URI (the server),
        MLFLOW_BACKEND_STORE_URI (the database, for `mlflow gc` and the like) and, with
        Ray, RAY_ADDRESS and what joining the head takes (its token, local-only mode).
        An error if the stack is not up."""
        recorded = state.load(self.folder) if self.folder.is_dir() else {}
        if not recorded:
            raise StackError(f"no stack in {self.folder}: start one with `digits stack up`")
        down = [c.name for c in self._status(recorded) if not c.up]
        if down:
            raise StackError(
                f"the stack in {self.folder} is not up ({', '.join(down)} down): "
                "run `digits stack up`"
            )
        found = {
            "MLFLOW_TRACKING_URI": recorded["mlflow"]["uri"],
            "MLFLOW_BACKEND_STORE_URI": recorded["postgres"]["backend_store_uri"],
        }
        head = recorded.get("ray") or {}
        if head.get("wanted"):
            found.update(ray_head.client_env(head["port"], Path(head["token"])))
        return found
