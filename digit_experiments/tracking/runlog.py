"""What one run logs, through an MlflowClient and the run's id (never MLflow's global
"active run": a run logged from inside someone else's, say `mlflow run .`'s or a
notebook's, leaves theirs alone).

`RunLog` keeps every epoch's metrics locally (metrics.json in the output directory) as
well as sending them, so that a tracking server that goes away mid-run costs nothing:
training goes on, and the epochs it missed are sent when it is back, at the latest when
training ends.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from digit_experiments.errors import TrackingUnavailable
from digit_experiments.tracking import store
from digit_experiments.tracking.redaction import redact

log = logging.getLogger(__name__)

# MLflow refuses batches of more than 100 params and values longer than 6000 characters.
PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000
DATASET_TRIES = 3

# What SQLite, PostgreSQL and MySQL say when an insert breaks a unique key; the store's
# message carries the database's (also through an MLflow server).
_DUPLICATE_KEY = re.compile(r"UNIQUE constraint failed|duplicate key value|Duplicate entry")


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


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    """Params in batches MLflow takes (at most 100, each value cut to 6000 characters)."""
    from mlflow.entities import Param

    items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    for i in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + PARAMS_PER_BATCH])


def now_ms() -> int:
    """A metric's timestamp, as MLflow takes it: milliseconds since the epoch."""
    return int(time.time() * 1000)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return redact(f"{type(error).__name__}: {text[0] if text else ''}")[:300]


class RunLog:
    """What one run logs. Keeps the per-epoch history and the checkpoint path, so that a
    run that stops early can still log its curves and best model (`salvage`)."""

    def __init__(self, client, run_id: str, output_dir: Path, uri: str, curves_figure=None):
        self.client = client
        # The epochs and the training state go through a client that never waits for a
        # server that is away (a store.PatientClient's plain one): training goes on.
        self.at_once = getattr(client, "at_once", client)
        self.run_id = run_id
        self.output_dir = Path(output_dir)
        self.uri = uri
        # history -> matplotlib Figure (the app's plotting); None: no curves are drawn.
        self.curves_figure = curves_figure
        self.history: dict[str, list[float]] = defaultdict(list)
        self.checkpoint: Path | None = None
        self.logged: set[str] = set()
        # Epochs whose metrics the store has not taken yet (the server was away).
        # (step, metrics, timestamp in ms): stamped when queued, so that sending the same
        # epoch again (a stop signal that lands after the store took it and before it
        # left the queue, then salvage) is a duplicate MLflow drops, not a second point.
        self.unsent: list[tuple[int, dict[str, float], int]] = []
        self._sent_best: float | None = None  # mtime of the best checkpoint last sent

    @property
    def local_metrics(self) -> Path:
        """Every epoch's metrics, written locally as they come, whatever the store does."""
        return self.output_dir / "metrics.json"

    # --- plain values -----------------------------------------------------------------

    def params(self, params: dict[str, Any]) -> None:
        log_params(self.client, self.run_id, params)

    def metrics(
        self,
        metrics: dict[str, float],
        step: int | None = None,
        timestamp: int | None = None,
        client=None,
    ) -> None:
        from mlflow.entities import Metric

        stamp = timestamp if timestamp is not None else now_ms()
        (client or self.client).log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), stamp, step or 0) for k, v in metrics.items()],
        )

    def tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(
            self.run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()]
        )

    def epoch(self, epoch: int, metrics: dict[str, float], send: bool = True) -> None:
        """One epoch's metrics (step = epoch, counted from 1), kept for the curves too.

        They go to metrics.json in the output directory first, then to the store (with
        `send=False`: when `send_pending` is called). If the store cannot take them (a
        tracking server gone away, after MLflow's own retries), training goes on: they
        wait, and are sent with the next epoch that gets through, or by `send_backlog`
        when training ends.
        """
        for key, value in metrics.items():
            self.history[key].append(float(value))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.local_metrics.write_text(json.dumps(dict(self.history), indent=1))
        self.unsent.append((epoch, metrics, now_ms()))
        if send:
            self.send_pending()

    def send_pending(self) -> None:
        """Send the epochs not sent yet (see `epoch`)."""
        if not self.unsent:
            return
        epoch = self.unsent[-1][0]
        backlog = len(self.unsent) > 1
        try:
            if backlog:
                store.check_reachable(self.uri, timeout=2.0)  # still away: don't wait on retries
            self._send_unsent(self.at_once)
        except (OSError, TrackingUnavailable, _mlflow_exception()) as e:
            if not backlog:
                log.warning(
                    "could not send epoch %d's metrics to %s (%s); training goes on, the "
                    "metrics are kept in %s and sent when the store is back",
                    epoch,
                    redact(self.uri),
                    first_line(e),
                    self.local_metrics,
                )
            return
        if backlog:
            log.info("the store is back: sent the metrics it had missed")

    def send_backlog(self, wait: float) -> None:
        """Send the epochs the store missed, waiting up to `wait` seconds for a tracking
        server that is away to come back. Raises TrackingUnavailable if it does not."""
        if not self.unsent:
            return
        log.info(
            "%d epochs' metrics are waiting for %s; waiting up to %.0f s for it",
            len(self.unsent),
            redact(self.uri),
            wait,
        )
        if not store.wait_until_reachable(self.uri, wait):
            raise TrackingUnavailable(
                f"the tracking server {redact(self.uri)} did not come back within {wait:.0f} s "
                f"(tracking.reconnect_timeout) to take {len(self.unsent)} epochs' metrics"
            )
        self._send_unsent()
        log.info("the store is back: sent the metrics it had missed")

    def _send_unsent(self, client=None) -> None:
        while self.unsent:
            step, values, stamp = self.unsent[0]
            self.metrics(values, step=step, timestamp=stamp, client=client)
            self.unsent.pop(0)

    def resend_missing(self, epochs: int) -> None:
        """A resumed run's epochs 1..`epochs` (its restored history) that the store does
        not have: the run was stopped after its state was saved and before that epoch's
        metrics were sent (see callback.EpochMetrics). Queued, sent with the next epoch."""
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "epoch_seconds")}
        for step in range(1, epochs + 1):
            if step not in logged:
                values = {k: v[step - 1] for k, v in self.history.items() if len(v) >= step}
                self.unsent.append((step, values, now_ms()))
        self.unsent.sort(key=lambda item: item[0])
        self.send_pending()

    def save_state(self, epoch: int, weights: Path) -> None:
        """After epoch `epoch`: the training state (`weights`: weights and optimizer
        variables), the best checkpoint when it changed, and the history so far, sent to
        the run so that `trainer.resume` can continue it from any machine. A store that
        cannot take them is not waited for: training goes on, the next epoch tries again."""
        from digit_experiments.tracking import resume

        if any(step < epoch for step, _, _ in self.unsent):
            return  # the store is away (metrics are waiting): don't wait on its retries
        progress = self.output_dir / resume.PROGRESS
        progress.write_text(json.dumps({"epoch": epoch, "history": dict(self.history)}))
        try:
            files = [weights, progress]
            best = self.checkpoint
            if best is not None and best.is_file() and best.stat().st_mtime != self._sent_best:
                files.insert(0, best)
            for path in files:
                self.at_once.log_artifact(self.run_id, str(path), resume.STATE_DIR)
            if best in files:
                self._sent_best = best.stat().st_mtime
            self.at_once.set_tag(self.run_id, resume.EPOCH_TAG, str(epoch))
        except (OSError, TrackingUnavailable, _mlflow_exception()) as e:
            log.warning("could not send the state after epoch %d: %s", epoch, first_line(e))

    # --- artifacts --------------------------------------------------------------------

    def figure(self, fig, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        try:
            self.client.log_figure(self.run_id, fig, artifact_file)
            self.logged.add(artifact_file)
        finally:
            plt.close(fig)

    def text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, redact(text), artifact_file)
        self.logged.add(artifact_file)

    def json(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)
        self.logged.add(artifact_file)

    def file(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)
        self.logged.add(f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name)

    def dataset(self, features, targets, name: str, source: str, digest: str, context: str):
        import warnings

        import mlflow.data
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with warnings.catch_warnings():
            # A local path matches two equivalent source types; MLflow warns and picks one.
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            dataset = mlflow.data.from_numpy(
                features, targets=targets, source=source, name=name, digest=digest
            )
        entry = DatasetInput(
            Dataset(**dataset.to_dict()), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]
        )
        for attempt in range(1, DATASET_TRIES + 1):
            try:
                self.client.log_inputs(self.run_id, datasets=[entry])
                return
            except _mlflow_exception() as exc:
                # Jobs of a sweep log the same dataset to one experiment. MLflow looks the
                # dataset up and inserts it when it is not there; two jobs doing so at once
                # both insert it and the later insert breaks the store's unique key. That
                # transaction is rolled back, and another try finds the row the other wrote.
                if attempt == DATASET_TRIES or not _DUPLICATE_KEY.search(str(exc)):
                    raise
                log.debug("dataset %r: another job logged it at the same moment; retrying", name)

    def model(self, save, metrics: dict) -> str:
        """Log the MLflow model that `save` writes (see logged_model.log_model) as this
        run's, with the run's test `metrics`; returns its models:/ URI."""
        from digit_experiments.tracking.logged_model import log_model

        return log_model(self.client, save, self.run_id, metrics)

    def curves(self) -> None:
        """The learning curves so far (plots/learning_curves.png) and their numbers."""
        if not self.history.get("loss"):
            return
        if self.curves_figure is not None:
            self.figure(self.curves_figure(self.history), "plots/learning_curves.png")
        self.json(dict(self.history), "reports/history.json")

    def salvage(self, reason: str) -> None:
        """Log what exists after training stopped early; never raises (the run's status
        must still be set by the caller)."""
        steps = (
            ("error", lambda: self.text(reason, "error.txt")),
            ("the missed epochs", lambda: self.unsent and self._send_unsent()),
            ("curves", lambda: "plots/learning_curves.png" in self.logged or self.curves()),
            ("checkpoint", self._salvage_checkpoint),
        )
        for what, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - best effort; keep the original error
                log.warning("could not log %s of the failed run: %s", what, first_line(e))

    def _salvage_checkpoint(self) -> None:
        if self.checkpoint is None or not self.checkpoint.is_file():
            return
        if f"checkpoints/{self.checkpoint.name}" not in self.logged:
            self.file(self.checkpoint, "checkpoints")


def _mlflow_exception() -> type[Exception]:
    from mlflow.exceptions import MlflowException

    return MlflowException
