"""Compare runs: the jobs of a sweep as a table, charts, and the best of them.

Used when a sweep ends (`finish_parent`, called by the sweep callback) and by
`digits compare`. Rows are plain dicts so the table can go to the terminal, CSV or
Markdown alike.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from digit_experiments.redaction import redact

log = logging.getLogger(__name__)

# (column, where it comes from): tags.X, params.X, metrics.X or info.X
COLUMNS = [
    ("job", "tags.hydra_job_num"),
    ("status", "info.status"),
    ("overrides", "tags.overrides"),
    ("model", "tags.model"),
    ("optimizer", "tags.optimizer"),
    ("regularization", "tags.regularization"),
    ("learning_rate", "params.optimizer.learning_rate"),
    ("batch_size", "params.trainer.batch_size"),
    ("test_accuracy", "metrics.test_accuracy"),
    ("test_f1_macro", "metrics.test_f1_macro"),
    ("best_val_accuracy", "metrics.best_val_accuracy"),
    ("epochs", "metrics.epochs_trained"),
    ("seconds", "metrics.train_seconds"),
    ("run_id", "info.run_id"),
]
PARENT_TAG = "mlflow.parentRunId"


def row(run: Run) -> dict:
    """One run as a table row (missing values are None)."""
    sources = {
        "tags": run.data.tags,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "info": {"status": run.info.status, "run_id": run.info.run_id},
    }
    out = {}
    for column, where in COLUMNS:
        kind, key = where.split(".", 1)
        out[column] = sources[kind].get(key)
    if out["job"] is not None:
        out["job"] = int(out["job"])
    if out["epochs"] is not None:
        out["epochs"] = int(out["epochs"])
    return out


def children(client: MlflowClient, parent: Run) -> list[Run]:
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        max_results=10_000,
    )


def sweep_rows(client: MlflowClient, parent: Run, sweep_dir: Path | None = None) -> list[dict]:
    """A row per job of the sweep, in job order. A job that failed before it could open
    its run (found in the sweep directory, but with no child run) is a FAILED row too."""
    rows = [row(run) for run in children(client, parent)]
    seen = {r["job"] for r in rows}
    if sweep_dir is not None and sweep_dir.is_dir():
        for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
            job_dir = overrides_file.parent.parent
            num = _job_num(job_dir)
            if num is None or num in seen:
                continue
            blank = dict.fromkeys(c for c, _ in COLUMNS)
            overrides = [
                line[2:].strip()
                for line in overrides_file.read_text().splitlines()
                if line.startswith("- ")
            ]
            blank.update(job=num, status="FAILED", overrides=redact(" ".join(overrides)))
            rows.append(blank)
    return sorted(rows, key=lambda r: (r["job"] is None, r["job"] or 0))


def _job_num(job_dir: Path) -> int | None:
    head = job_dir.name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def best(rows: list[dict], metric: str = "test_accuracy") -> dict | None:
    scored = [r for r in rows if r["status"] == "FINISHED" and r.get(metric) is not None]
    return max(scored, key=lambda r: r[metric]) if scored else None


def sort_rows(rows: list[dict], metric: str, ascending: bool = False) -> list[dict]:
    present = [r for r in rows if r.get(metric) is not None]
    missing = [r for r in rows if r.get(metric) is None]
    return sorted(present, key=lambda r: r[metric], reverse=not ascending) + missing


# --- formats --------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return str(value)


def to_markdown(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or [c for c, _ in COLUMNS]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or [c for c, _ in COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """An aligned plain-text table for the terminal."""
    columns = columns or [c for c, _ in COLUMNS]
    cells = [columns] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return (
        "\n".join(
            "  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip()
            for line in cells
        )
        + "\n"
    )


# --- closing a sweep ------------------------------------------------------------------


def finish_parent(uri: str, parent_id: str, sweep_dir: Path | None) -> str:
    """Log the comparison of a sweep's jobs on its parent run and end it.

    The parent ends FINISHED when every job finished, FAILED otherwise (or when there
    were no jobs at all). Returns that status."""
    from digit_experiments import plots

    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    rows = sweep_rows(client, parent, sweep_dir)
    failed = [r for r in rows if r["status"] != "FINISHED"]
    status = "FAILED" if failed or not rows else "FINISHED"
    try:
        client.log_text(parent_id, to_csv(rows), "comparison/jobs.csv")
        client.log_text(parent_id, to_markdown(rows), "comparison/jobs.md")
        finished = [r for r in rows if r["test_accuracy"] is not None]
        if finished:
            client.log_figure(
                parent_id, plots.sweep_comparison(finished), "comparison/test_accuracy.png"
            )
        client.log_metric(parent_id, "jobs_total", len(rows))
        client.log_metric(parent_id, "jobs_failed", len(failed))
        top = best(rows)
        if top is not None:
            client.log_param(parent_id, "best_run_id", top["run_id"])
            client.set_tag(parent_id, "best_run_id", top["run_id"])
            client.set_tag(parent_id, "best_overrides", top["overrides"] or "")
            for metric in ("test_accuracy", "test_f1_macro", "best_val_accuracy"):
                if top[metric] is not None:
                    client.log_metric(parent_id, f"best_{metric}", top[metric])
        if sweep_dir is not None:
            _log_optuna_results(client, parent_id, sweep_dir, rows)
        if failed:
            client.set_tag(parent_id, "failed_jobs", ", ".join(str(r["job"]) for r in failed))
    finally:
        client.set_terminated(parent_id, status)
        mlflow.set_tracking_uri(uri)
    log.info("sweep %s: %d jobs, %d failed -> %s", parent_id, len(rows), len(failed), status)
    return status


def _log_optuna_results(client: MlflowClient, parent_id: str, sweep_dir: Path, rows):
    """The Optuna sweeper writes optimization_results.yaml: log best params and history."""
    from omegaconf import OmegaConf

    from digit_experiments import plots

    results_file = sweep_dir / "optimization_results.yaml"
    if not results_file.is_file():
        return
    results = OmegaConf.to_container(OmegaConf.load(results_file))
    client.log_artifact(parent_id, str(results_file), "comparison")
    for key, value in (results.get("best_params") or {}).items():
        client.log_param(parent_id, f"best.{key}", value)
    if results.get("best_value") is not None:
        client.log_metric(parent_id, "best_value", float(results["best_value"]))
    values = [r["best_val_accuracy"] for r in rows if r["best_val_accuracy"] is not None]
    if values:
        client.log_figure(
            parent_id, plots.optimization_history(values), "comparison/optimization_history.png"
        )


# --- finding runs ---------------------------------------------------------------------


def latest_sweep(client: MlflowClient, experiment_ids: list[str]) -> Run | None:
    runs = client.search_runs(
        experiment_ids,
        filter_string="tags.sweep = 'true'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None
