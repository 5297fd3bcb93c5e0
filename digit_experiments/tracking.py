"""MLflow: where runs go, the run's lifecycle, and everything a run logs.

This is the one module that talks to MLflow while training (the Keras callback in
callbacks.py reports through a `RunLog` from here). `tracked_run` guarantees that a run
ends with the right status (FINISHED, FAILED, KILLED) and that whatever exists when
training stops (checkpoint, curves so far, the error) is logged first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import threading
import traceback
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from digit_experiments.redaction import redact
from digit_experiments.sweep import PARENT_ENV

log = logging.getLogger(__name__)

# MLflow refuses batches of more than 100 params and values longer than 6000 characters.
PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000


# --- where runs go --------------------------------------------------------------------


def resolve_tracking_uri(configured: str | None, root: Path) -> str:
    """The store a run logs to: tracking.uri, else $MLFLOW_TRACKING_URI, else the embedded
    sqlite:///mlflow.db in `root`. A relative SQLite path is taken against `root`, never
    against a job's working directory, so sweeps and `hydra.job.chdir=true` runs all land
    in the one database that `mlflow ui` (started in `root`) shows."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((root / uri[len(prefix) :]).resolve())
    return uri


HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached: said before any training starts."""


class TrackingLost(TrackingUnavailable):
    """The tracking server went away during the run; says where the run's results are."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast when an HTTP tracking server is not there. MLflow's own client retries
    every call with backoff for minutes; without this check a wrong URI would surface
    only after that, or after training. Any HTTP answer (even 401/404) means a server is
    listening; only a refused, unresolvable or silent address is an error."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    # Credentials in the URI stay out of the probe (and of the message).
    health = urllib.parse.urlunsplit(
        (
            parts.scheme,
            parts.hostname + (f":{parts.port}" if parts.port else ""),
            parts.path.rstrip("/") + "/health",
            "",
            "",
        )
    )
    try:
        urllib.request.urlopen(health, timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingUnavailable(
            f"tracking server {redact(uri)} is unreachable ({reason}); start it "
            "(mlflow server --host 127.0.0.1 --port ...) or set tracking.uri / "
            "MLFLOW_TRACKING_URI to a store that is there"
        ) from None


def connect(uri: str) -> None:
    """Point MLflow at `uri`, once it is known to be there. With credentials in the URI,
    MLflow's own "View run at <uri>/..." lines would print them: those are turned off."""
    check_reachable(uri)
    if redact(uri) != uri:
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if uri.startswith(("http://", "https://")):
        # MLflow retries a failed request 7 times with backoff factor 2 (about 4 minutes)
        # before it gives up: training would stall that long at the first epoch after a
        # server went away. 3 retries, 1 s doubling: 7 s. The user's settings win.
        for name, value in HTTP_RETRIES.items():
            os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)


def ensure_experiment(name: str, uri: str, root: Path) -> str:
    """The id of experiment `name`, created if needed; safe when several jobs race."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise MlflowException(
                f"tracking.experiment: experiment {name!r} is deleted in {uri}; restore it "
                "(mlflow experiments restore) or choose another name"
            )
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        # MLflow would put artifacts in ./mlruns of whatever directory this process is in;
        # pin them beside the database instead.
        location = (root / "mlruns" / _slug(name)).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another job created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def experiment_for_run(name: str, uri: str, root: Path) -> str:
    """The experiment a run goes to: the sweep's parent's, for a job of a sweep (children
    can only be shown nested under a parent in the same experiment), else `name`."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        return MlflowClient(tracking_uri=uri).get_run(parent).info.experiment_id
    return ensure_experiment(name, uri, root)


DATASET_TRIES = 3

# What SQLite, PostgreSQL and MySQL say when an insert breaks a unique key; the store's
# message carries the database's (also through an MLflow server).
_DUPLICATE_KEY = re.compile(r"UNIQUE constraint failed|duplicate key value|Duplicate entry")


def _duplicate_key(exc: MlflowException) -> bool:
    return bool(_DUPLICATE_KEY.search(str(exc)))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "experiment"


# The checkout this code runs from (an editable install): its commit is the code's.
PROJECT_DIR = Path(__file__).resolve().parent.parent


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


# --- params ---------------------------------------------------------------------------


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict/list as one flat dict with dotted keys (lists keep their JSON form)."""
    flat: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    value = json.dumps(tree) if isinstance(tree, (list, tuple)) else tree
    if isinstance(value, str):
        value = redact(value)
    flat[prefix.rstrip(".")] = value
    return flat


# --- the run --------------------------------------------------------------------------


class RunLog:
    """What one run logs. Keeps the per-epoch history and the checkpoint path, so that a
    run that stops early can still log its curves and best model (`salvage`)."""

    def __init__(self, run_id: str, output_dir: Path, uri: str | None = None):
        self.run_id = run_id
        self.output_dir = output_dir
        self.uri = uri
        self.history: dict[str, list[float]] = defaultdict(list)
        self.checkpoint: Path | None = None
        self.logged: set[str] = set()
        # Epochs whose metrics the store has not taken yet (the server was away).
        self.unsent: list[tuple[int, dict[str, float]]] = []

    @property
    def local_metrics(self) -> Path:
        """Every epoch's metrics, written locally as they come, whatever the store does."""
        return self.output_dir / "metrics.json"

    # plain values
    def params(self, params: dict[str, Any]) -> None:
        items = [(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            mlflow.log_params(dict(items[i : i + PARAMS_PER_BATCH]))

    def metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch's metrics (step = epoch, counted from 1), kept for the curves too.

        They go to metrics.json in the output directory first, then to the store. If the
        store cannot take them (a tracking server gone away, after MLflow's own retries),
        training goes on: they wait, and are sent with the next epoch that gets through.
        """
        for key, value in metrics.items():
            self.history[key].append(float(value))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.local_metrics.write_text(json.dumps(dict(self.history), indent=1))
        self.unsent.append((epoch, metrics))
        backlog = len(self.unsent) > 1
        try:
            if backlog and self.uri:
                check_reachable(self.uri, timeout=2.0)  # still away: don't wait on retries
            while self.unsent:
                step, values = self.unsent[0]
                self.metrics(values, step=step)
                self.unsent.pop(0)
        except (MlflowException, OSError, TrackingUnavailable) as e:
            if not backlog:
                log.warning(
                    "could not send epoch %d's metrics to %s (%s); training goes on, the "
                    "metrics are kept in %s and sent when the store is back",
                    epoch,
                    redact(self.uri or "the store"),
                    _first_line(e),
                    self.local_metrics,
                )
            return
        if backlog:
            log.info("the store is back: sent the metrics it had missed")

    def tags(self, tags: dict[str, Any]) -> None:
        mlflow.set_tags({k: redact(str(v)) for k, v in tags.items()})

    # artifacts
    def figure(self, fig, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        try:
            mlflow.log_figure(fig, artifact_file)
            self.logged.add(artifact_file)
        finally:
            plt.close(fig)

    def text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(redact(text), artifact_file)
        self.logged.add(artifact_file)

    def json(self, data: Any, artifact_file: str) -> None:
        mlflow.log_dict(data, artifact_file)
        self.logged.add(artifact_file)

    def file(self, path: Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path)
        self.logged.add(f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name)

    def dataset(self, features, targets, name: str, source: str, digest: str, context: str):
        import warnings

        import mlflow.data

        with warnings.catch_warnings():
            # A local path matches two equivalent source types; MLflow warns and picks one.
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            dataset = mlflow.data.from_numpy(
                features, targets=targets, source=source, name=name, digest=digest
            )
        for attempt in range(1, DATASET_TRIES + 1):
            try:
                mlflow.log_input(dataset, context=context)
                return
            except MlflowException as exc:
                # Jobs of a sweep log the same dataset to one experiment. MLflow looks the
                # dataset up and inserts it when it is not there; two jobs doing so at once
                # both insert it and the later insert breaks the store's unique key. That
                # transaction is rolled back, and another try finds the row the other wrote.
                if attempt == DATASET_TRIES or not _duplicate_key(exc):
                    raise
                log.debug("dataset %r: another job logged it at the same moment; retrying", name)

    def keras_model(self, model, input_example, output_example, pip_requirements: list[str]) -> str:
        """Log the model as an MLflow model (Keras 3 flavor); returns its models:/ URI.
        `output_example` is the model's output for `input_example` (for the signature)."""
        import warnings

        import mlflow.keras
        from mlflow.models import infer_signature

        signature = infer_signature(input_example, output_example)
        with _keras_input_example_fix(), warnings.catch_warnings():
            # MLflow reloads the saved model to check the input example; Keras then warns
            # that the optimizer state it does not need was not restored.
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            info = mlflow.keras.log_model(
                model,
                name="model",
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements,
            )
        return info.model_uri

    def curves(self) -> None:
        from digit_experiments import plots

        if not self.history.get("loss"):
            return
        self.figure(plots.learning_curves(self.history), "plots/learning_curves.png")
        self.json(dict(self.history), "reports/history.json")

    def salvage(self, reason: str) -> None:
        """Log what exists after training stopped early; never raises (the run's status
        must still be set by the caller)."""
        steps = (
            ("error", lambda: self.text(reason, "error.txt")),
            ("curves", lambda: "plots/learning_curves.png" in self.logged or self.curves()),
            ("checkpoint", self._salvage_checkpoint),
        )
        for what, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - best effort; keep the original error
                log.warning("could not log %s of the failed run: %s", what, e)

    def _salvage_checkpoint(self) -> None:
        if self.checkpoint is None or not self.checkpoint.is_file():
            return
        if f"checkpoints/{self.checkpoint.name}" not in self.logged:
            self.file(self.checkpoint, "checkpoints")


@contextmanager
def _keras_input_example_fix() -> Iterator[None]:
    """mlflow.keras.save_model writes the input example before it creates the model
    folder, so any input_example fails with FileNotFoundError (mlflow/mlflow#16183, open
    in MLflow 3.17). Create the folder first; a no-op once MLflow fixes it."""
    import mlflow.keras.save as keras_save

    original = keras_save._save_example

    def save_example(mlflow_model, input_example, path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        return original(mlflow_model, input_example, path, *args, **kwargs)

    keras_save._save_example = save_example
    try:
        yield
    finally:
        keras_save._save_example = original


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or `kill` stopping the run), raised like Ctrl-C so that the run
    ends KILLED with its checkpoint and curves so far logged."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def terminated(signum, frame):
        raise Terminated(f"terminated by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def tracked_run(
    experiment_id: str, run_name: str, tags: dict[str, str], output_dir: Path
) -> Iterator[RunLog]:
    """Start (or resume) a run; end it FINISHED, FAILED or KILLED, salvaging on failure.

    Under `mlflow run`, MLFLOW_RUN_ID names the run MLflow already opened: start_run
    resumes it rather than opening a second one. In a sweep, the run is a child of the
    sweep's parent run; inside an active run, it is nested under that one.
    """
    resume = os.environ.get("MLFLOW_RUN_ID")
    run = mlflow.start_run(
        run_id=resume,
        experiment_id=None if resume else experiment_id,
        run_name=None if resume else run_name,
        nested=mlflow.active_run() is not None,
        # A sweep's job: the sweep callback put the parent run's id in the environment.
        parent_run_id=None if resume else os.environ.get(PARENT_ENV),
        tags={key: redact(str(value)) for key, value in tags.items()},
    )
    if resume:
        mlflow.set_tag("mlflow.runName", run_name)
    record = RunLog(run.info.run_id, output_dir, mlflow.get_tracking_uri())
    try:
        with _sigterm_as_interrupt():
            yield record
    except KeyboardInterrupt as e:
        reason = str(e) or "interrupted by the user (Ctrl-C, SIGINT)"
        _end_failed(record, "KILLED", reason, reason + "\n", e)
        raise
    except BaseException as e:
        reason = f"{type(e).__name__}: {e}"[:5000]
        _end_failed(record, "FAILED", reason, traceback.format_exc(), e)
        raise
    else:
        mlflow.end_run("FINISHED")


def _end_failed(record: RunLog, status: str, reason: str, details: str, error) -> None:
    """Log what exists and end the run with `status`; if the store itself is gone, raise
    TrackingLost saying where the run's results are kept instead."""
    if record.uri:
        try:
            check_reachable(record.uri, timeout=2.0)
        except TrackingUnavailable:
            _forget_active_run()
            kept = [str(record.local_metrics)]
            if record.checkpoint is not None and record.checkpoint.is_file():
                kept.insert(0, str(record.checkpoint))
            raise TrackingLost(
                f"the tracking server {redact(record.uri)} went away during run "
                f"{record.run_id} ({_first_line(error)}); what it could not take is kept "
                f"locally: {', '.join(kept)}"
            ) from error
    record.tags({"error": reason})
    record.salvage(details)
    mlflow.end_run(status)


def _forget_active_run() -> None:
    """Drop the active run here without telling the server, which cannot be reached (and
    MLflow's exit hook would otherwise retry ending it)."""
    from mlflow.tracking import fluent

    try:
        fluent._active_run_stack.get().clear()
    except AttributeError:  # a later MLflow keeps it elsewhere: then end_run fails fast
        log.debug("could not drop the active run locally")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return redact(f"{type(error).__name__}: {text[0] if text else ''}")[:300]
