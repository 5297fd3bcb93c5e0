"""Compare runs: the jobs of a sweep as a table, and the best of them.

Used when a sweep ends (the sweep callback logs the table on the parent run) and by
`digits compare`. Rows are plain dicts so the table can go to the terminal, CSV or
Markdown alike.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from digit_experiments.tracking import search
from digit_experiments.tracking.redaction import redact

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
    ("single_view_test_accuracy", "metrics.single_view_test_accuracy"),
    ("test_f1_macro", "metrics.test_f1_macro"),
    ("best_val_accuracy", "metrics.best_val_accuracy"),
    ("epochs", "metrics.epochs_trained"),
    ("seconds", "metrics.train_seconds"),
    ("run_id", "info.run_id"),
]
# Recorded only by a run tested in several views (trainer.test_time_shift, an ensemble's
# --test-time-shift): its test_accuracy is then the views', and this the bare network's.
# So a table that mixes both says which is which; shown when some run has it.
VIEWS_COLUMN = "single_view_test_accuracy"
# Not what the experiment is: what a sweep passes each job itself (app/sweep.py), and
# how a job is resumed or skipped. Not shown.
INTERNAL_OVERRIDES = (
    "tracking.parent_run_id=",
    "tracking.uri=",
    "trainer.resume=",
    "tracking.skip_finished=",
)
# A run that joined a finished sweep (tracking.parent_run_id given to a single run) was
# no Hydra job: its number in the sweep, given when it ended (app/sweep.py), is this tag.
JOINED_TAG = "joined_as_job"


def shown_overrides(overrides: list[str]) -> str:
    """The overrides a user typed (or a sweeper chose), as one string for a table."""
    return " ".join(o for o in overrides if not o.startswith(INTERNAL_OVERRIDES))


def row(run) -> dict:
    """One run as a table row (missing values are None), and its `params`, which no
    table shows (reporting.groups groups runs by them)."""
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
    if out["job"] is None:
        out["job"] = run.data.tags.get(JOINED_TAG)
    if out["job"] is not None:
        out["job"] = int(out["job"])
    if out["epochs"] is not None:
        out["epochs"] = int(out["epochs"])
    out["params"] = dict(run.data.params)
    # Not shown either: how app/sweep.py numbers the runs that joined a sweep.
    out["hydra_job"] = "hydra_job_num" in run.data.tags
    out["started"] = run.info.start_time
    return out


def sweep_rows(client, parent, sweep_dir: Path | None = None) -> list[dict]:
    """A row per job of the sweep, in job order. A job that failed before it could open
    its run (found in the sweep directory, but with no child run) is a FAILED row too."""
    rows = [row(run) for run in search.children(client, parent)]
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
            blank.update(job=num, status="FAILED", overrides=redact(shown_overrides(overrides)))
            blank.update(hydra_job=True, started=None)
            rows.append(blank)
    return sorted(rows, key=lambda r: (r["job"] is None, r["job"] or 0))


def default_columns(rows: list[dict]) -> list[str]:
    """Every column, the single-view accuracy only where some run was tested in views."""
    return [c for c, _ in COLUMNS if c != VIEWS_COLUMN or any(r.get(c) is not None for r in rows)]


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
    columns = columns or default_columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or default_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """An aligned plain-text table for the terminal."""
    columns = columns or default_columns(rows)
    cells = [columns] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return (
        "\n".join(
            "  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip()
            for line in cells
        )
        + "\n"
    )
