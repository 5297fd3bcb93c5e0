"""A run's lifecycle: open it, hand out its RunLog, and always end it with the right
status: FINISHED, FAILED (an exception) or KILLED (Ctrl-C, SIGTERM), with whatever
exists when training stopped (checkpoint, curves so far, the error) logged first.

Runs are created and ended through an MlflowClient with explicit run ids. MLflow's
fluent "active run" is only read, to nest under a run the caller has open (a notebook's
`with mlflow.start_run():`); it is never changed, so the caller's run is left as it was.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from digit_experiments.errors import Terminated, TrackingLost, TrackingUnavailable
from digit_experiments.tracking import store
from digit_experiments.tracking.redaction import redact
from digit_experiments.tracking.runlog import RunLog, first_line

log = logging.getLogger(__name__)

# Under `mlflow run`, the run MLflow opened for the project: the one to fill.
PROJECT_RUN_ENV = "MLFLOW_RUN_ID"


@contextmanager
def tracked_run(
    uri: str,
    experiment_id: str,
    run_name: str,
    tags: dict[str, str],
    output_dir: Path,
    parent_run_id: str | None = None,
    curves_figure: Callable | None = None,
    system_metrics: float | None = None,
    resume_run_id: str | None = None,
    patience: float = 0.0,
) -> Iterator[RunLog]:
    """Open a run (or take the one `mlflow run` opened); end it FINISHED, FAILED or
    KILLED, salvaging on failure. The run is a child of `parent_run_id` if given (see
    `enclosing_run_id`), else a top-level run. `system_metrics`: seconds between
    samples of MLflow's system metrics (None: none). `resume_run_id`: an ended run to
    open again (RUNNING) instead of a new one. `patience`: seconds a call waits for a
    tracking server that is away (store.PatientClient; the epochs never wait)."""
    client = store.client(uri, patience)
    tags = {key: redact(str(value)) for key, value in tags.items()}
    if resume_run_id:
        run_id = _reopen(client, resume_run_id, run_name, tags, parent_run_id)
    else:
        run_id = _open(client, experiment_id, run_name, tags, parent_run_id)
    record = RunLog(client, run_id, output_dir, uri, curves_figure)
    if store.is_http(uri):
        log.info("run page: %s/#/experiments/%s/runs/%s", redact(uri), experiment_id, run_id)
    try:
        with _stop_signals_as_interrupt(), _system_metrics(uri, run_id, system_metrics):
            yield record
    except KeyboardInterrupt as e:
        reason = str(e) or "interrupted by the user (Ctrl-C, SIGINT)"
        e.run_id = run_id  # recorded: nobody else needs to
        _end_failed(record, "KILLED", reason, reason + "\n", e)
        raise
    except BaseException as e:
        reason = f"{type(e).__name__}: {e}"[:5000]
        e.run_id = run_id
        _end_failed(record, "FAILED", reason, traceback.format_exc(), e)
        raise
    else:
        _terminate(record, "FINISHED")


def _open(client, experiment_id: str, run_name: str, tags: dict, parent_run_id) -> str:
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    project_run = os.environ.get(PROJECT_RUN_ENV)
    if project_run:
        # `mlflow run .` opened this run for us (with its own source tags): fill it.
        client.log_batch(project_run, tags=_run_tags({**tags, MLFLOW_RUN_NAME: run_name}))
        return project_run
    from mlflow.tracking.context import registry as context

    if parent_run_id is not None:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    # The same source, user and git tags `mlflow.start_run` would add.
    run = client.create_run(experiment_id, tags=context.resolve_tags(tags), run_name=run_name)
    return run.info.run_id


def _reopen(client, run_id: str, run_name: str, tags: dict, parent_run_id) -> str:
    """An interrupted run, RUNNING again: its error tag goes, the new tags are set. In a
    sweep launched again, the run moves under the new sweep's parent run."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    if parent_run_id is not None:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    if "error" in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, "error")
    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, tags=_run_tags({**tags, MLFLOW_RUN_NAME: run_name}))
    return run_id


def enclosing_run_id() -> str | None:
    """The caller's active MLflow run (a notebook's `with mlflow.start_run():`), which a
    run started inside it nests under; None under `mlflow run`, whose run is filled."""
    if os.environ.get(PROJECT_RUN_ENV):
        return None
    import mlflow

    active = mlflow.active_run()
    return active.info.run_id if active is not None else None


def _run_tags(tags: dict):
    from mlflow.entities import RunTag

    return [RunTag(key, value) for key, value in tags.items()]


def _end_failed(record: RunLog, status: str, reason: str, details: str, error) -> None:
    """Log what exists and end the run with `status`; whatever fails while doing so (the
    store refusing a tag, say) is logged and the run is still ended. If the tracking
    server itself is gone, raise TrackingLost saying where the run's results are."""
    try:
        store.check_reachable(record.uri, timeout=2.0)
    except TrackingUnavailable:
        kept = [str(record.local_metrics)]
        if record.checkpoint is not None and record.checkpoint.is_file():
            kept.insert(0, str(record.checkpoint))
        raise TrackingLost(
            f"the tracking server {redact(record.uri)} went away during run "
            f"{record.run_id} ({first_line(error)}); what it could not take is kept "
            f"locally: {', '.join(kept)}"
        ) from error
    try:
        record.tags({"error": reason})
    except Exception as e:  # noqa: BLE001 - the status must still be set
        log.warning("could not tag run %s with its error: %s", record.run_id, first_line(e))
    record.salvage(details)
    _terminate(record, status)


def _terminate(record: RunLog, status: str) -> None:
    try:
        record.client.set_terminated(record.run_id, status)
    except Exception as e:
        try:
            store.check_reachable(record.uri, timeout=2.0)
        except TrackingUnavailable:
            raise TrackingLost(
                f"the tracking server {redact(record.uri)} went away before run "
                f"{record.run_id} could be ended {status} ({first_line(e)}); its metrics "
                f"are kept in {record.local_metrics}"
            ) from e
        raise


@contextmanager
def _system_metrics(uri: str, run_id: str, interval: float | None) -> Iterator[None]:
    """MLflow's system-metrics monitor on this run while it trains (a thread sampling
    CPU, memory, disk, network and any GPU); stopped, and its last samples sent, before
    the run is ended. A run resumed later continues its steps."""
    if not interval:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    # Its start/stop/"no GPU" INFO lines, at every run, say nothing a user needs.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=interval, resume_logging=True, tracking_uri=uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


# The stop signal (SIGTERM, SIGINT) this process received inside a run, as the
# exception it raised, if any (see raise_if_terminated).
_received: list[KeyboardInterrupt] = []


def raise_if_terminated() -> None:
    """Raise again the stop signal that came, if one did. The handler's own raise is
    lost when the signal lands while a finaliser runs (Python prints "Exception ignored
    in __del__" and goes on), which TensorFlow's objects make likely: training then ran
    on to its last epoch. The tracking callback asks this after every batch."""
    if _received:
        raise _received[0]


@contextmanager
def _stop_signals_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stopped(signum, frame):
        if signum == signal.SIGINT:
            _received.append(KeyboardInterrupt())
        else:
            _received.append(Terminated(f"terminated by signal {signal.Signals(signum).name}"))
        raise _received[-1]

    _received.clear()
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, stopped)}
    # Ctrl-C too, unless SIGINT is ignored (a shell's background job) or someone else's.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, stopped)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()
