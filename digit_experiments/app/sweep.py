"""A Hydra multirun as one MLflow parent run with a child run per job.

`MlflowSweepCallback` is registered in conf/config.yaml under `hydra.callbacks`. Hydra
calls `on_multirun_start` before the sweeper and the launcher exist, in the process the
user started: the parent run is opened there and the experiment is created once
(parallel creation races on SQLite). The parent's id is then passed to every job as a
value, the override `tracking.parent_run_id=...` added to the sweep's task overrides:
each job's config carries it, whichever launcher runs the job and wherever (a worker
process, a Ray node that does not inherit the driver's environment), and a job whose
store does not have that run says so instead of becoming a top-level run. The tracking
URI goes along the same way (`tracking.uri=...`, as resolved here), so every job logs to
the store the parent is in.

When the sweep ends (or dies: Hydra's sweepers raise after a batch in which a job failed,
and then `on_multirun_end` is never called), `finish_parent` compares the children and
closes the parent: FINISHED if every job finished, FAILED otherwise.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from digit_experiments.app import finetune
from digit_experiments.errors import TrackingUnavailable
from digit_experiments.tracking import store
from digit_experiments.tracking.redaction import redact, redact_logs

log = logging.getLogger(__name__)

PARENT_OVERRIDE = "tracking.parent_run_id"
URI_OVERRIDE = "tracking.uri"
# The parent's metrics: what a user charts across sweeps (a job's are test_accuracy,
# best_val_accuracy, ...; the sweep's say `sweep_`).
SWEEP_BEST = "sweep_best_test_accuracy"
SWEEP_BEST_VALUE = "sweep_best_value"  # Optuna's best objective (best validation accuracy)
LOST_JOB = (
    "lost: the job's process died before it could end its run (a worker killed, out of "
    "memory, a node gone); trainer.resume=auto continues it from its last checkpoint"
)


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.sweep_dir: Path | None = None
        self.uri: str | None = None
        self.patience = 0.0  # tracking.reconnect_timeout (see store.PatientClient)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking.context import registry as context

        from digit_experiments.tracking import lifecycle, provenance

        # What closing the parent needs, imported now: when a sweep dies, the parent is
        # closed at exit, and at exit an import that registers its own exit hook (scikit-
        # learn's, through joblib) fails, which would leave the parent RUNNING.
        importlib.import_module("digit_experiments.reporting.plots")
        importlib.import_module("digit_experiments.reporting.compare")
        importlib.import_module("digit_experiments.reporting.groups")
        importlib.import_module("digit_experiments.reporting.describe")
        redact_logs()  # Hydra logs every job's overrides, tracking.uri included
        root = Path.cwd()
        self.uri = store.resolve_tracking_uri(config.tracking.uri, root)
        try:
            store.connect(self.uri)
        except TrackingUnavailable as e:
            # Hydra turns a callback's exception into a warning and sweeps on; no job
            # could be recorded, so stop here (SystemExit passes through Hydra).
            print(f"digits-train: {e}", file=sys.stderr)
            sys.exit(1)
        self.patience = float(config.tracking.reconnect_timeout)
        experiment_id = store.ensure_experiment(
            config.tracking.experiment, self.uri, root, self.patience
        )
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        overrides = list(config.hydra.overrides.task)
        client = store.client(self.uri, self.patience)
        # A preset's own swept values (hydra.sweeper.params of the basic sweeper: the
        # mlp_vs_cnn preset's model=mlp,cnn) are part of what the sweep is. Optuna's are
        # search spaces, not values: its name stays the overrides typed.
        sweeper = OmegaConf.select(config, "hydra.sweeper._target_", default="") or ""
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        swept = params if sweeper.endswith("BasicSweeper") and params else None
        name = redact(sweep_name(overrides, swept))
        tags = {
            "sweep": "true",
            "sweep_overrides": redact(" ".join(overrides)),
            "sweep_dir": str(self.sweep_dir),
            "sweeper": sweeper,
            "launcher": OmegaConf.select(config, "hydra.launcher._target_", default="") or "",
            **provenance.tags(),
        }
        # Under `mlflow run -e sweep`, MLflow already opened a run for the project: that run
        # is the parent. The jobs must not fill it themselves, hence the pop.
        project_run = os.environ.pop(lifecycle.PROJECT_RUN_ENV, None)
        if project_run:
            self.parent_id = project_run
            client.set_tag(project_run, "mlflow.runName", name)
            for key, value in tags.items():
                client.set_tag(project_run, key, value)
        else:
            tags["mlflow.runName"] = name
            run = client.create_run(experiment_id, tags=context.resolve_tags(tags), run_name=name)
            self.parent_id = run.info.run_id
        # Every job gets the parent and the store as config values (quoted: an id of
        # digits only must stay a string); a tracking.uri the user typed is replaced by
        # the same URI, resolved.
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            task = config.hydra.overrides.task
            kept = [o for o in task if not o.lstrip("+~").startswith(f"{URI_OVERRIDE}=")]
            task.clear()
            task.extend(kept)
            task.append(f"{URI_OVERRIDE}={quoted(self.uri)}")
            task.append(f"{PARENT_OVERRIDE}={quoted(self.parent_id)}")
        os.environ["MLFLOW_TRACKING_URI"] = self.uri
        atexit.register(self._finish_if_open)
        log.info("sweep: MLflow parent run %s (%s)", self.parent_id, name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish_if_open()

    def _finish_if_open(self) -> None:
        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        finish_parent(self.uri, parent_id, self.sweep_dir, self.patience)


def quoted(value: str) -> str:
    """`value` as a quoted Hydra override value. Hydra's grammar: inside quotes, a quote
    is escaped, and so are the backslashes before a quote or at the end."""
    value = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    value = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, value)
    return f"'{value}'"


def sweep_name(overrides: list[str], params=None) -> str:
    """A readable name for the sweep: the preset, what it sweeps (the overrides with
    several values, and those a preset sweeps itself: `params`, hydra.sweeper.params),
    then its fixed overrides, e.g. `sweep experiment=best_cnn trainer.seed=1,2,3
    trainer.epochs=60`. The fixed ones tell apart two sweeps of the same values under
    other settings; they come last, where a narrow column cuts a name."""
    from digit_experiments.reporting.compare import INTERNAL_OVERRIDES

    shown = [o for o in overrides if not o.startswith(INTERNAL_OVERRIDES)]
    swept = [o for o, many in zip(shown, _swept(shown)) if many]
    swept += [f"{key}={value}" for key, value in (params or {}).items()]
    preset = [o for o in shown if o.startswith("experiment=") and o not in swept]
    fixed = [o for o in shown if o not in swept and o not in preset]
    return "sweep " + " ".join(preset + swept + fixed or ["(defaults)"])


def _swept(overrides: list[str]) -> list[bool]:
    """Whether each override sweeps, as Hydra reads it: `a=1,2`, `a=range(3)`,
    `a=glob(*)` do; a list value such as `model.kernel_size=[7,3]` does not."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    found = []
    for override in overrides:
        try:
            found.append(parser.parse_override(override).is_sweep_override())
        except Exception:  # noqa: BLE001 - Hydra parsed it already; a name is no reason to fail
            found.append("," in override)
    return found


def finish_parent(uri: str, parent_id: str, sweep_dir: Path | None, patience: float = 0.0) -> str:
    """Log the comparison of a sweep's jobs on its parent run and end it.

    The parent ends FINISHED when every job finished, FAILED otherwise (or when there
    were no jobs at all), also when logging the comparison fails. Returns that status.
    `patience`: seconds a call waits for a tracking server that is away."""
    from digit_experiments.reporting import compare

    client = store.client(uri, patience)
    status = "FAILED"
    try:
        parent = client.get_run(parent_id)
        end_lost_jobs(client, parent)
        rows = compare.sweep_rows(client, parent, sweep_dir)
        failed = [r for r in rows if r["status"] != "FINISHED"]
        status = "FAILED" if failed or not rows else "FINISHED"
        top = summarise(client, parent, rows, uri, sweep_dir)
        if top is not None:  # a param: what the sweep chose when it ended, for good
            client.log_param(parent_id, "best_run_id", top["run_id"])
    finally:
        client.set_terminated(parent_id, status)
    log.info("sweep %s: %d jobs, %d failed -> %s", parent_id, len(rows), len(failed), status)
    return status


def summarise(client, parent, rows: list[dict], uri: str, sweep_dir: Path | None) -> dict | None:
    """What a sweep's parent shows of its jobs: the table (comparison/jobs.*), the chart,
    the configurations' mean ± std (over seeds), counts, the best job and the
    descriptions in MLflow's UI. Returns the best row."""
    from digit_experiments.reporting import compare, plots

    parent_id = parent.info.run_id
    failed = [r for r in rows if r["status"] != "FINISHED"]
    client.log_text(parent_id, compare.to_csv(rows), "comparison/jobs.csv")
    client.log_text(parent_id, compare.to_markdown(rows), "comparison/jobs.md")
    finished = [r for r in rows if r["test_accuracy"] is not None]
    if finished:
        client.log_figure(
            parent_id, plots.sweep_comparison(finished), "comparison/test_accuracy.png"
        )
    by_config = []
    try:
        by_config = log_by_config(client, parent_id, rows)
    except Exception as e:  # noqa: BLE001 - a summary must not lose the sweep
        log.warning("could not log the sweep's configurations: %s", redact(str(e))[:300])
    finetune.log_few_shot(client, parent_id)  # a sweep over data.per_class: its chart
    # Counts are tags: as metrics they would be charts of the parent alone in the
    # sweep's chart view, among the charts that compare the jobs. The one metric kept
    # (SWEEP_BEST) is the one to chart across sweeps, named as no job's metric is.
    client.set_tag(parent_id, "jobs_total", str(len(rows)))
    client.set_tag(parent_id, "jobs_failed", str(len(failed)))
    top = compare.best(rows)
    if top is not None:
        client.set_tag(parent_id, "best_run_id", top["run_id"])
        client.set_tag(parent_id, "best_overrides", top["overrides"] or "")
        client.log_metric(parent_id, SWEEP_BEST, top["test_accuracy"])
    if sweep_dir is not None:
        _log_optuna_results(client, parent_id, sweep_dir, rows)
    try:
        describe_in_ui(client, parent, rows, top, uri, by_config)
    except Exception as e:  # noqa: BLE001 - names and notes must not lose the sweep
        log.warning("could not write the sweep's descriptions: %s", redact(str(e))[:300])
    if failed:
        client.set_tag(parent_id, "failed_jobs", ", ".join(str(r["job"]) for r in failed))
    return top


def refresh_parent(uri: str, parent_id: str) -> bool:
    """A run that joined a finished sweep (a single run given `tracking.parent_run_id`)
    updates the sweep's summary, as if it had been one more job: numbered after the
    jobs when it has ended (tag `joined_as_job`, see `_number_joined`), then the
    tables, chart, counts, best and descriptions made again from every child that has
    ended.
    The parent keeps its status, and its param `best_run_id` (params cannot change)
    stays what the sweep chose; the tag `best_run_id` is the best now. Ensembles nested
    under the sweep are not jobs and stay out. Returns False, doing nothing, when the
    parent is no sweep or is still running (its sweep will summarise at the end)."""
    from digit_experiments.reporting import compare

    client = store.client(uri)
    parent = client.get_run(parent_id)
    if parent.data.tags.get("sweep") != "true" or parent.info.status == "RUNNING":
        return False
    sweep_dir = parent.data.tags.get("sweep_dir")
    sweep_dir = Path(sweep_dir) if sweep_dir else None
    rows = compare.sweep_rows(client, parent, sweep_dir)
    _number_joined(client, rows)
    rows = [r for r in rows if r["job"] is not None and r["status"] != "RUNNING"]
    summarise(client, parent, rows, uri, sweep_dir)
    log.info("sweep %s: summary made again, %d runs", parent_id, len(rows))
    return True


def _number_joined(client, rows: list[dict]) -> None:
    """Number the joined runs in `rows` (in place, and by tag once each has ended):
    after the sweep's jobs, in the order the joined runs started. Every refresh works
    the numbers out again from the whole set, so two joined runs ending at the same
    time get the same numbers whichever refresh writes last, and a run still training
    keeps its place (a gap until it ends) instead of taking a number that an earlier
    one already holds."""
    from digit_experiments.reporting import compare
    from digit_experiments.reporting.groups import ENSEMBLE

    joined = [r for r in rows if not r["hydra_job"] and r["model"] != ENSEMBLE]
    jobs = [r["job"] for r in rows if r["hydra_job"] and r["job"] is not None]
    first = max(jobs, default=-1) + 1
    joined.sort(key=lambda r: (r["started"], r["run_id"]))
    for number, row in enumerate(joined, start=first):
        if row["status"] == "RUNNING":
            row["job"] = None  # numbered when it ends
            continue
        if row["job"] != number:
            client.set_tag(row["run_id"], compare.JOINED_TAG, str(number))
        row["job"] = number


def log_by_config(client, parent_id: str, rows: list[dict]) -> list[dict]:
    """A sweep that repeats configurations (over seeds: `trainer.seed=1,2,3`): a row per
    configuration, mean ± std of each metric (comparison/by_config.md and .csv), and a
    chart of test accuracy with error bars and each seed's run (by_config.png). Returns
    those rows; none, and nothing logged, when no configuration ran twice (mlp vs cnn
    stays the table of its jobs)."""
    from digit_experiments.reporting import groups, plots

    table = groups.sort_groups(groups.by_config(rows, []), "test_accuracy")
    if not groups.has_repeats(table):
        return []
    client.log_text(parent_id, groups.to_markdown(table, []), "comparison/by_config.md")
    client.log_text(parent_id, groups.to_csv(table, []), "comparison/by_config.csv")
    scored = [g for g in table if g["test_accuracy_mean"] is not None]
    if scored:
        values = [
            [r["test_accuracy"] for r in g["rows"] if r["test_accuracy"] is not None]
            for g in scored
        ]
        figure = plots.repeats([g["config"] for g in scored], values)
        client.log_figure(parent_id, figure, "comparison/by_config.png")
    return table


def describe_in_ui(
    client, parent, rows: list[dict], best: dict | None, uri: str, by_config=()
) -> None:
    """What MLflow's UI shows of the sweep, for someone who opens it: each job named by
    what differs within the sweep (`cnn #1`), in the runs table, the charts' legends and
    the compare page; each job's description one line of what it is and how it did; the
    parent's description the comparison table, every job linked, and a link to MLflow's
    page that compares them side by side; for a sweep over seeds (`by_config`, rows of
    reporting.groups), first the configurations' mean ± std."""
    from digit_experiments.reporting import compare, describe, groups
    from digit_experiments.tracking import search

    base = describe.ui_base(uri)
    experiment_id = parent.info.experiment_id
    parent_url = describe.run_url(base, experiment_id, parent.info.run_id)
    runs = {run.info.run_id: run for run in search.children(client, parent)}
    optuna = "optuna" in parent.data.tags.get("sweeper", "").lower()
    what = "trial" if optuna else "job"
    differs = describe.differing(rows)
    names = {}
    for row in rows:
        run = runs.get(row["run_id"])
        if run is None:  # failed before it could open a run: a row only
            continue
        own = differs.get(row["job"], [])
        names[row["run_id"]] = redact(renamed(run.info.run_name or "", own, row["job"]))
        if names[row["run_id"]] != run.info.run_name:
            client.update_run(row["run_id"], name=names[row["run_id"]])
        error = run.data.tags.get("error")
        line = describe.member_line(
            row, own, error, parent.info.run_name or "sweep", parent_url, row is best, what
        )
        client.set_tag(row["run_id"], describe.NOTE_TAG, redact(line))
    objective = None
    if optuna:  # what the search maximised (the app returns it), and the trial it chose
        objective = ("best_val_accuracy", "val accuracy", compare.best(rows, "best_val_accuracy"))
    extra = ""
    if by_config:
        extra = groups.to_markdown(list(by_config), [], ["test_accuracy", "test_f1_macro"])
        if len(extra) > describe.MAX_NOTE // 2:  # the jobs' table needs the room
            extra = f"{len(by_config)} configurations, over seeds: see `comparison/by_config.md`."
    text = describe.summary(rows, names, experiment_id, base, best, objective, what, extra)
    client.set_tag(parent.info.run_id, describe.NOTE_TAG, redact(text))


def renamed(name: str, differs: list[str], job: int | None) -> str:
    """A job's run name as what differs within its sweep and its number (`cnn #1`). What
    the job named itself (`cnn-adam-dropout #1`) stays where nothing differs, and so does
    what happened to it (` (refused)`, ` (reused)`)."""
    from digit_experiments.reporting import describe

    found = re.fullmatch(r"(.*?)(?: #\d+)?( \((?:refused|reused)\))?", name)
    own, outcome = found.group(1), found.group(2) or ""
    return describe.run_name(differs, job, fallback=own or "job") + outcome


def end_lost_jobs(client, parent) -> None:
    """A child still RUNNING when its sweep ends lost its process (a worker killed, out
    of memory, a node gone) before it could end its run: ended FAILED, saying so."""
    from digit_experiments.tracking import search

    for run in search.children(client, parent):
        if run.info.status == "RUNNING":
            run_id = run.info.run_id
            log.warning("job run %s was left RUNNING: its process died; ended FAILED", run_id)
            client.set_tag(run_id, "error", LOST_JOB)
            client.set_terminated(run_id, "FAILED")


def _log_optuna_results(client, parent_id: str, sweep_dir: Path, rows) -> None:
    """The Optuna sweeper writes optimization_results.yaml: log best params and history."""
    from digit_experiments.reporting import plots

    results_file = sweep_dir / "optimization_results.yaml"
    if not results_file.is_file():
        return
    results = OmegaConf.to_container(OmegaConf.load(results_file))
    client.log_artifact(parent_id, str(results_file), "comparison")
    for key, value in (results.get("best_params") or {}).items():
        client.log_param(parent_id, f"best.{key}", value)
    if results.get("best_value") is not None:
        client.log_metric(parent_id, SWEEP_BEST_VALUE, float(results["best_value"]))
    values = [r["best_val_accuracy"] for r in rows if r["best_val_accuracy"] is not None]
    if values:
        client.log_figure(
            parent_id, plots.optimization_history(values), "comparison/optimization_history.png"
        )
