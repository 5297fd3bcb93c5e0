"""Runs told in words and links, for MLflow's own UI: what differs between the runs of a
group (names such as `cnn #1`), a run's one-line description, and a group's summary (a
table of its runs, each linked to its page, the best one marked, and a link to MLflow's
page that compares them).

MLflow shows a run's description (the tag `mlflow.note.content`) as Markdown on the
run's page. Pure functions of table rows (`compare.row`'s dicts) and ids: app/sweep.py
writes the results on a sweep's runs; whatever else groups runs under a parent (an
ensemble, a fine-tuning series) can do the same.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urlsplit, urlunsplit

NOTE_TAG = "mlflow.note.content"  # the run's description in MLflow's UI
# MLflow cuts (or refuses) a tag value over 8,000 characters, which would break the
# table: a summary longer than this shows fewer rows.
MAX_NOTE = 8000
# Config groups whose chosen option says what a run is; with other overrides only the
# value would not say what it is (`0.01`), so they are shown as `leaf=value`.
WHAT = ("model", "optimizer", "regularization")
COMPARE_TEXT = "Compare these runs in MLflow"
# An override starts where whitespace is followed by `key=` (values such as
# `choice(32, 64)` hold spaces themselves).
_OVERRIDE_START = re.compile(r"\s+(?=[+~]*[\w.@/-]+=)")


# --- links into MLflow's UI ---------------------------------------------------------


def ui_base(uri: str | None) -> str:
    """Where MLflow's UI for the store at `uri` is, as the start of a link.

    A tracking server (http/https) serves its own UI: its address, without credentials
    (links then work from anywhere: an artifact, a notebook, a message). A local store
    (SQLite, a database, a folder) is shown by whatever `mlflow ui` serves it, at a host
    and port only its user knows: "" then, and links are relative to the page they are
    on, which is that UI's (MLflow's pages are `#/...` routes of one document)."""
    parts = urlsplit(uri or "")
    if parts.scheme not in ("http", "https"):
        return ""
    netloc = parts.netloc.rsplit("@", 1)[-1]  # user:password@ never goes into a link
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


# MLflow 3.17's UI opens in its GenAI mode (a browser's first visit), where a run's page
# sits under "Evaluations"; this says the runs are model training.
WORKFLOW = "workflowType=machine_learning"


def _route(base: str, route: str) -> str:
    return f"{base}/#/{route}" if base else f"#/{route}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page in MLflow's UI."""
    return _route(base, f"experiments/{experiment_id}/runs/{run_id}?{WORKFLOW}")


def compare_url(base: str, run_ids: list[str], experiment_ids: list[str]) -> str:
    """MLflow's page that compares runs (parallel coordinates, scatter and box plots,
    params and metrics side by side). MLflow 3's UI builds it as
    `#/compare-runs?runs=<JSON list>&experiments=<JSON list>`; percent-encoded here so
    that the brackets and quotes survive Markdown."""

    def encoded(values):
        return quote(json.dumps(list(values), separators=(",", ":")), safe="")

    query = f"runs={encoded(run_ids)}&experiments={encoded(sorted(set(experiment_ids)))}&{WORKFLOW}"
    return _route(base, f"compare-runs?{query}")


# --- what differs between runs ------------------------------------------------------


def split_overrides(text: str | None) -> list[str]:
    """A table's overrides cell (`shown_overrides`) back into its overrides."""
    text = (text or "").strip()
    return _OVERRIDE_START.split(text) if text else []


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def differing(rows: list[dict]) -> dict[int | None, list[str]]:
    """For each row (by its `job`), the overrides whose values are not the same in every
    row: what this run is within its group (`model=cnn` in a sweep model=mlp,cnn)."""
    parsed = {
        r["job"]: dict((_key(o), o) for o in split_overrides(r.get("overrides"))) for r in rows
    }
    keys: list[str] = []
    for overrides in parsed.values():
        keys += [k for k in overrides if k not in keys]
    varying = [k for k in keys if len({o.get(k) for o in parsed.values()}) > 1]
    return {job: [o[k] for k in varying if k in o] for job, o in parsed.items()}


def common(rows: list[dict]) -> list[str]:
    """The overrides every row has, with the same value (the group's shared settings)."""
    lists = [split_overrides(r.get("overrides")) for r in rows]
    if not lists:
        return []
    return [o for o in lists[0] if all(o in other for other in lists[1:])]


def _short_value(value: str) -> str:
    """A number as a legend needs it: 0.0012345678 -> 0.00123; the rest as it is."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if len(value) <= 6 else f"{number:.3g}"


def short(override: str) -> str:
    """An override with its number cut to what a table needs (`l2=6.25e-05`)."""
    key, sep, value = override.partition("=")
    return f"{key}{sep}{_short_value(value)}" if sep else override


def label(overrides: list[str]) -> str:
    """Overrides as a short name: a config group's choice by its value (`cnn`), a value
    by its last key part (`learning_rate=0.00123`; the whole key where two would read the
    same)."""
    keys = [_key(o) for o in overrides]
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    parts = []
    for override, key, leaf in zip(overrides, keys, leaves):
        value = _short_value(override.split("=", 1)[1] if "=" in override else override)
        if "." not in key and "/" not in key:
            parts.append(value)
        else:
            parts.append(f"{leaf if leaves.count(leaf) == 1 else key}={value}")
    return " ".join(parts)


def run_name(overrides: list[str], job: int | None, fallback: str) -> str:
    """A member's name within its group: what differs, and its number (`cnn #1`);
    `fallback` when nothing differs (a group of one)."""
    what = label(overrides) or fallback
    return what if job is None else f"{what} #{job}"


# --- descriptions -------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def minutes(seconds: float | None) -> str:
    """Minutes, with a second digit below one minute (a quick job is not `0.0`)."""
    if seconds is None:
        return ""
    return f"{seconds / 60:.1f}" if seconds >= 60 else f"{seconds / 60:.2f}"


def what_it_is(row: dict, differs: list[str] | None = None) -> str:
    """`cnn, adam, dropout`: the options that make the run, and its overrides that differ
    within its group where the options do not say them already (an Optuna trial's
    values: `cnn, adam, dropout_l2 (learning_rate=0.00123 batch_size=64)`)."""
    what = ", ".join(str(row[k]) for k in WHAT if row.get(k))
    if not what:  # a run refused before it recorded its options: its overrides say it
        return label(differs or []) or "run"
    shown = label([o for o in differs or [] if _key(o) not in WHAT])
    return f"{what} ({shown})" if shown else what


def run_line(row: dict, differs: list[str] | None = None, error: str | None = None) -> str:
    """One line: what the run is and how it did, e.g. `cnn, adam, dropout: 99.22% test
    accuracy, 10 epochs, 2.8 min`; a run that did not finish: its status and `error`."""
    what = md(what_it_is(row, differs))
    if row.get("status") not in (None, "FINISHED"):
        # The error on one line (a message may go on over several), cut short.
        reason = " ".join((error or "").split())
        reason = f": {md(reason[:197] + '...' if len(reason) > 200 else reason)}" if reason else ""
        return f"{what}: {row['status']}{reason}"
    how = [f"{percent(row.get('test_accuracy'))} test accuracy"]
    if row.get("test_f1_macro") is not None:
        how.append(f"macro F1 {row['test_f1_macro']:.4f}")
    if row.get("epochs") is not None:
        how.append(f"{row['epochs']} epoch{'s' if row['epochs'] != 1 else ''}")
    if row.get("seconds") is not None:
        seconds = row["seconds"]
        how.append(f"{minutes(seconds)} min" if seconds >= 60 else f"{seconds:.0f} s")
    return f"{what}: " + ", ".join(how)


def member_line(
    row: dict,
    differs: list[str] | None,
    error: str | None,
    parent_name: str,
    parent_url: str,
    best: bool,
    what: str = "job",
) -> str:
    """A group member's description: `run_line`, then where it belongs, linked (`job #1
    of sweep model=mlp,cnn, the best`)."""
    where = f"{what} #{row['job']} of [{md(parent_name)}]({parent_url})"
    return f"{run_line(row, differs, error)} ({where}{', the best' if best else ''})"


def md(text) -> str:
    """Text as Markdown shows it literally (also inside a table cell and a link's text)."""
    text = re.sub(r"([\\`*_\[\]|])", r"\\\1", str(text))
    return text.replace("<", "&lt;")  # no HTML tags; `>=` reads as it is


def _code(text: str) -> str:
    """Overrides as code (underscores and stars stay literal); `|` would end the cell."""
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`" if text else ""


def summary(
    rows: list[dict],
    names: dict[str, str],
    experiment_id: str,
    base: str,
    best: dict | None,
    objective: tuple[str, str, dict | None] | None = None,
    what: str = "job",
    extra: str = "",
) -> str:
    """A group's description (Markdown): the link that compares its runs in MLflow, the
    best run, then a row per run (each linked to its page): name, model, the overrides
    that differ, test accuracy, macro F1, epochs, minutes of training, status.

    `names`: run id -> run name. `best`: the row marked best (by test accuracy).
    `objective`: (metric, heading, row) of a search's own objective and the row it
    chose, shown as a column too (Optuna maximises the best validation accuracy).
    `extra`: Markdown shown before the table of runs (a sweep over seeds: the mean ± std
    of each configuration)."""
    differs = differing(rows)
    shared = common(rows)
    failed = [r for r in rows if r["status"] != "FINISHED"]
    plural = "s" if len(rows) != 1 else ""
    counts = f"{len(rows)} {what}{plural}, " + (
        f"{len(failed)} failed" if failed else "all finished"
    )

    def name(r):
        return names.get(r["run_id"]) or f"{what} #{r['job']}"

    def render(shown: list[dict]) -> str:
        ids = [r["run_id"] for r in shown if r["run_id"]]
        lines = []
        if ids:
            lines.append(
                f"**[{COMPARE_TEXT}]({compare_url(base, ids, [experiment_id])})**: "
                f"{'the' if len(shown) == len(rows) else 'these'} {len(ids)} {what}s side by "
                "side (parallel coordinates, scatter plots, params and metrics)."
            )
        top = []
        if best is not None:
            top.append(
                f"Best: **{md(name(best))}**, {percent(best['test_accuracy'])} test accuracy"
            )
        if objective is not None and objective[2] is not None:
            metric, heading, chosen = objective
            value = f"{heading} {chosen[metric]:.4f}, the search's objective"
            if chosen is best:
                top[-1] += f" ({value})"
            else:
                top.append(f"the search's best: **{md(name(chosen))}** ({value})")
        lines.append("; ".join(top + [counts]) + ".")
        if extra:
            lines += ["", extra.rstrip("\n")]
        columns = [what, "model", "overrides that differ", "test accuracy", "macro F1"]
        if objective is not None:
            columns.append(objective[1])
        columns += ["epochs", "minutes", "status"]
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in shown:
            cell = md(name(r))
            if r["run_id"]:
                cell = f"[{cell}]({run_url(base, experiment_id, r['run_id'])})"
            if best is not None and r is best:
                cell = f"**{cell}** ★ best"
            cells = [
                cell,
                md(r.get("model") or ""),
                _code(" ".join(map(short, differs.get(r["job"], [])))),
                percent(r.get("test_accuracy")),
                "" if r.get("test_f1_macro") is None else f"{r['test_f1_macro']:.4f}",
            ]
            if objective is not None:
                value = r.get(objective[0])
                cells.append("" if value is None else f"{value:.4f}")
            cells += [
                "" if r.get("epochs") is None else str(r["epochs"]),
                minutes(r.get("seconds")),
                r["status"] or "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if len(shown) < len(rows):
            lines += ["", f"{len(rows) - len(shown)} more {what}s: see `comparison/jobs.md`."]
        if shared:
            lines += ["", f"Every {what} had {_code(' '.join(shared))}."]
        return "\n".join(lines) + "\n"

    text = render(rows)
    if len(text) <= MAX_NOTE:
        return text
    # Too long for a tag: the best runs first, as many as fit.
    ranked = sorted(
        rows, key=lambda r: (r.get("test_accuracy") is None, -(r.get("test_accuracy") or 0))
    )
    for count in range(len(rows) - 1, 0, -1):
        shown = sorted(ranked[:count], key=lambda r: (r["job"] is None, r["job"] or 0))
        text = render(shown)
        if len(text) <= MAX_NOTE:
            return text
    return text[:MAX_NOTE]
