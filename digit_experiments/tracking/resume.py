"""Runs that continue: a run interrupted (SIGTERM from a scheduler, a lost worker) is
resumed into the same MLflow run, and a sweep launched again can skip the jobs that
already finished.

A run is identified by its config: `config_hash` of everything that changes what is
trained (not where it is recorded, nor how it is resumed), stored as the run's
`config_hash` tag. While training, the run sends its state after every epoch (the
weights and the optimizer's variables, the best checkpoint, the history so far) to its
artifacts under `checkpoints/`, and tags the epoch that state is at (`resume.epoch`):
nothing is needed from the machine that trained it, so another worker can continue.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digit_experiments.errors import ResumeError
from digit_experiments.tracking import search

log = logging.getLogger(__name__)

HASH_TAG = "config_hash"
EPOCH_TAG = "resume.epoch"
STATE_DIR = "checkpoints/state"  # artifact folder of the state after the last epoch
WEIGHTS = "last.weights.h5"  # weights and optimizer variables (Keras' save_weights)
PROGRESS = "progress.json"  # {"epoch": N, "history": {...}}
# Keys that do not change what is trained: where it is recorded, how it is launched.
NOT_HASHED = ("tracking", "trainer.resume", "trainer.threads", "trainer.verbose")
RESUMABLE = ("FAILED", "KILLED")


def hashed(key: str) -> bool:
    """Whether a flattened config key changes what is trained (is not NOT_HASHED)."""
    return not any(key == k or key.startswith(k + ".") for k in NOT_HASHED)


def config_hash(flat_params: dict[str, Any]) -> str:
    """A short hash of the flattened config, without the NOT_HASHED keys."""
    kept = {key: str(value) for key, value in flat_params.items() if hashed(key)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class State:
    """A run's training state, downloaded: continue from `epoch` (epochs done)."""

    run_id: str
    epoch: int
    history: dict[str, list[float]]
    weights: Path
    best_checkpoint: Path | None


def find_unfinished(client, experiment_ids: list[str], hash_: str):
    """The latest run with this config that ended FAILED or KILLED with a saved state
    (None if there is none): what `trainer.resume=auto` continues."""
    for run in search.iter_runs(
        client, experiment_ids, f"tags.{HASH_TAG} = '{hash_}'", ["attributes.start_time DESC"]
    ):
        if run.info.status in RESUMABLE and EPOCH_TAG in run.data.tags:
            return run
    return None


def find_finished(client, experiment_ids: list[str], hash_: str):
    """The latest FINISHED run with this config (None if there is none)."""
    for run in search.iter_runs(
        client,
        experiment_ids,
        f"tags.{HASH_TAG} = '{hash_}' and attributes.status = 'FINISHED'",
        ["attributes.start_time DESC"],
    ):
        if search.SWEEP_TAG not in run.data.tags:
            return run
    return None


def check_resumable(client, run_id: str, hash_: str, flat_params: dict[str, Any]):
    """The run `trainer.resume=RUN_ID` names, if it can be continued with this config;
    else ResumeError saying why."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise ResumeError(f"trainer.resume={run_id}: no such run in this store ({e})") from e
    status = run.info.status
    if status == "FINISHED":
        raise ResumeError(f"trainer.resume={run_id}: the run already FINISHED")
    if EPOCH_TAG not in run.data.tags:
        raise ResumeError(
            f"trainer.resume={run_id}: the run has no saved training state (it stopped "
            "before its first epoch ended, or trainer.checkpoint.save_last was off)"
        )
    if run.data.tags.get(HASH_TAG) != hash_:
        differing = _differences(run.data.params, flat_params)
        raise ResumeError(
            f"trainer.resume={run_id}: the run was trained with another config"
            + (f" ({'; '.join(differing[:5])})" if differing else "")
        )
    if status == "RUNNING":
        log.warning("run %s is still RUNNING: resuming it as if its process were gone", run_id)
    return run


def _differences(logged: dict[str, str], flat_params: dict[str, Any]) -> list[str]:
    out = []
    for key, value in sorted(flat_params.items()):
        if hashed(key) and key in logged and logged[key] != str(value):
            out.append(f"{key}: run {logged[key]}, now {value}")
    return out


def download(client, run, dest: Path) -> State:
    """The run's saved state, downloaded into `dest`."""
    run_id = run.info.run_id
    dest.mkdir(parents=True, exist_ok=True)
    local = Path(client.download_artifacts(run_id, STATE_DIR, str(dest)))
    progress = json.loads((local / PROGRESS).read_text())
    best = list(local.glob("*_best_model.h5"))
    return State(
        run_id=run_id,
        epoch=int(progress["epoch"]),
        history={k: [float(v) for v in values] for k, values in progress["history"].items()},
        weights=local / WEIGHTS,
        best_checkpoint=best[0] if best else None,
    )
