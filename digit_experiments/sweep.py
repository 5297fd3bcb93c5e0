"""A Hydra multirun as one MLflow parent run with a child run per job.

`MlflowSweepCallback` is registered in conf/config.yaml under `hydra.callbacks`. Hydra
calls `on_multirun_start` before the sweeper and the launcher exist, in the process the
user started: the parent run is opened there, the experiment is created once (parallel
creation races on SQLite), and the parent's id goes into the environment, which every job
sees, in this process (basic launcher) or in worker processes (joblib), which are started
later and inherit it. Each job's `tracked_run` nests itself under that id.

When the sweep ends (or dies: Hydra's sweepers raise after a batch in which a job failed,
and then `on_multirun_end` is never called), `finish` compares the children and closes the
parent: FINISHED if every job finished, FAILED otherwise.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# The parent run's id, for the jobs (read by tracking.tracked_run).
PARENT_ENV = "DIGITS_PARENT_RUN_ID"
TRACKING_ENV = "MLFLOW_TRACKING_URI"


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.sweep_dir: Path | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        from digit_experiments import tracking
        from digit_experiments.redaction import redact, redact_logs

        redact_logs()  # Hydra logs every job's overrides, tracking.uri included
        root = Path.cwd()
        self.uri = tracking.resolve_tracking_uri(config.tracking.uri, root)
        try:
            tracking.connect(self.uri)
        except tracking.TrackingUnavailable as e:
            # Hydra turns a callback's exception into a warning and sweeps on; no job
            # could be recorded, so stop here (SystemExit passes through Hydra).
            print(f"digits-train: {e}", file=sys.stderr)
            sys.exit(1)
        experiment_id = tracking.ensure_experiment(config.tracking.experiment, self.uri, root)
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        overrides = list(config.hydra.overrides.task)
        client = MlflowClient(self.uri)
        # Under `mlflow run -e sweep`, MLflow already opened a run for the project: that run
        # is the parent. The jobs must not resume it themselves, hence the pop.
        project_run = os.environ.pop("MLFLOW_RUN_ID", None)
        tags = {
            "sweep": "true",
            "sweep_overrides": redact(" ".join(overrides)),
            "sweep_dir": str(self.sweep_dir),
            "sweeper": OmegaConf.select(config, "hydra.sweeper._target_", default="") or "",
            "launcher": OmegaConf.select(config, "hydra.launcher._target_", default="") or "",
        }
        if project_run:
            self.parent_id = project_run
            client.set_tag(project_run, "mlflow.runName", redact(sweep_name(overrides)))
            for key, value in tags.items():
                client.set_tag(project_run, key, value)
        else:
            tags["mlflow.runName"] = redact(sweep_name(overrides))
            run = client.create_run(experiment_id, tags=tags, run_name=tags["mlflow.runName"])
            self.parent_id = run.info.run_id
        commit = tracking.git_commit()
        if commit:
            client.set_tag(self.parent_id, "git_commit", commit)
        # Every job (here or in a worker process) logs to the same store and experiment,
        # under this parent.
        os.environ[PARENT_ENV] = self.parent_id
        os.environ[TRACKING_ENV] = self.uri
        mlflow.set_tracking_uri(self.uri)
        atexit.register(self._finish_if_open)
        log.info("sweep: MLflow parent run %s (%s)", self.parent_id, tags["mlflow.runName"])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish_if_open()

    def _finish_if_open(self) -> None:
        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        try:
            from digit_experiments import compare

            compare.finish_parent(self.uri, parent_id, self.sweep_dir)
        finally:
            os.environ.pop(PARENT_ENV, None)


def sweep_name(overrides: list[str]) -> str:
    """A readable name for the sweep: its swept overrides, e.g. `sweep model=mlp,cnn`."""
    swept = [o for o in overrides if "," in o or "glob(" in o or "range(" in o]
    return "sweep " + " ".join(swept or overrides or ["(defaults)"])
