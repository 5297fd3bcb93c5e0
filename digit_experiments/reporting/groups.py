"""Runs grouped by configuration: repeats over seeds as mean ± std, min and max.

One run says little about a configuration: its seed alone moves test accuracy by a few
tenths of a percent. A sweep over seeds (`-m trainer.seed=1,2,3 model=mlp,cnn`) is told
here as a row per configuration: how many runs, and each metric's mean, sample standard
deviation (n - 1; blank for a single run), min and max. Used by `digits compare
--group-by` and by a sweep's parent run (comparison/by_config.*).

Pure functions of `compare.row` dicts (their `params` say the configuration).
"""

from __future__ import annotations

import csv
import difflib
import io
import statistics

from digit_experiments.reporting import compare, describe
from digit_experiments.tracking import resume

SEED = "trainer.seed"
# tags.model of a `digits ensemble` run (app.ensemble): what `--filter "tags.model =
# 'ensemble'"` finds, what keeps an earlier ensemble out of a later one's members, and
# what makes an ensemble logged under a sweep a row of its own here, not a configuration.
ENSEMBLE = "ensemble"
# compare's numeric columns: what a run measured (its metrics), not what it was given.
METRICS = [column for column, where in compare.COLUMNS if where.startswith("metrics.")]
STD_NOTE = 'std: the sample standard deviation (n - 1), "-" for a single run'


def parse_keys(text: str) -> list[str]:
    """`--group-by model.name,optimizer.name` as its keys; "" (no value) as []."""
    return [key.strip() for key in text.split(",") if key.strip()]


def config_keys(rows: list[dict]) -> list[str]:
    """What makes a configuration: every param but the seed, and those that say where a
    run is recorded or how it is launched or resumed (tracking.*, trainer.threads, ...:
    the keys a run's config hash leaves out, tracking.resume.NOT_HASHED). Otherwise runs
    of one configuration from two sweeps would split on their parent run's id."""
    keys = {key for r in rows for key in r.get("params") or {}}
    return sorted(key for key in keys if key != SEED and resume.hashed(key))


def resolve_keys(wanted: list[str], rows: list[dict]) -> list[str]:
    """The params `wanted` names, as the runs logged them. A config group's name alone
    (`model`, as in the override model=mlp) means its option (`model.name`). ValueError
    naming a key no run has, with the keys that are known."""
    known = sorted({key for r in rows for key in r.get("params") or {}})
    resolved = []
    for key in wanted:
        if key not in known and f"{key}.name" in known:
            key = f"{key}.name"
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"no run has the param {key!r}{hint}; known: {', '.join(known) or 'none'}"
            )
        resolved.append(key)
    return resolved


def by_config(rows: list[dict], keys: list[str]) -> list[dict]:
    """A row per configuration, of the FINISHED runs (a run that failed has no honest
    metrics), in the order the groups first appear: `config` (a short name), each of
    `keys` (the params grouped by; [] for config_keys), `runs`, `seeds`, and for each
    metric M `M_mean`, `M_std`, `M_min`, `M_max`; `rows`: the group's own rows.
    An ensemble run (`digits ensemble --parent SWEEP` logs it under the sweep) is a
    group of its own, after the configurations: it trained nothing, and its params (its
    members) are no configuration."""
    finished = [r for r in rows if r.get("status") == "FINISHED"]
    trained = [r for r in finished if r.get("model") != ENSEMBLE]
    explicit = bool(keys)
    keys = keys or config_keys(trained)
    buckets: dict[tuple, list[dict]] = {}
    for r in trained:
        params = r.get("params") or {}
        buckets.setdefault(tuple(params.get(k) for k in keys), []).append(r)
    if explicit:
        names = [" ".join(str(v) for v in values) for values in buckets]
    else:
        names = _names(list(buckets.items()), keys)
    for r in finished:
        if r.get("model") == ENSEMBLE:
            size = (r.get("params") or {}).get("ensemble.size", "?")
            buckets[(ENSEMBLE, r["run_id"])] = [r]
            names.append(f"ensemble of {size} ({str(r['run_id'])[:8]})")
    groups = []
    for members, name in zip(buckets.values(), names):
        seeds = sorted({(r.get("params") or {}).get(SEED) or "" for r in members}, key=_seed_order)
        params = members[0].get("params") or {}
        group = {"config": name, **{k: params.get(k) for k in keys}, "runs": len(members)}
        group["seeds"] = ",".join(s for s in seeds if s)
        for metric in METRICS:
            group.update(stats(metric, [r.get(metric) for r in members]))
        group["rows"] = members
        groups.append(group)
    return groups


def stats(metric: str, values: list) -> dict:
    """`metric`'s mean, sample std (None for fewer than two values), min and max."""
    present = [v for v in values if v is not None]
    if not present:
        return dict.fromkeys(f"{metric}_{s}" for s in ("mean", "std", "min", "max"))
    return {
        f"{metric}_mean": statistics.fmean(present),
        f"{metric}_std": statistics.stdev(present) if len(present) > 1 else None,
        f"{metric}_min": min(present),
        f"{metric}_max": max(present),
    }


def has_repeats(groups: list[dict]) -> bool:
    """Whether some configuration ran more than once (a sweep over seeds)."""
    return any(g["runs"] > 1 for g in groups)


def sort_groups(groups: list[dict], metric: str, ascending: bool = False) -> list[dict]:
    """By the mean of `metric` (best first), a group without it last; by name when
    `metric` is no metric."""
    if metric not in METRICS:
        return sorted(groups, key=lambda g: g["config"])
    key = f"{metric}_mean"
    present = [g for g in groups if g[key] is not None]
    missing = [g for g in groups if g[key] is None]
    return sorted(present, key=lambda g: g[key], reverse=not ascending) + missing


def _seed_order(seed: str):
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def _names(buckets: list[tuple[tuple, list[dict]]], keys: list[str]) -> list[str]:
    """Each group's short name. From the overrides its runs share, but for the seed,
    where they tell the groups apart (`mlp`, `cnn`, as a sweep names its jobs); else
    from the params that differ between the groups."""
    shared = [
        [o for o in describe.common(members) if o.split("=", 1)[0].lstrip("+~") != SEED]
        for _, members in buckets
    ]
    pseudo = [{"job": i, "overrides": " ".join(s)} for i, s in enumerate(shared)]
    differs = describe.differing(pseudo)
    if len(buckets) == 1:
        names = [describe.label(shared[0])]
    else:
        names = [describe.label(differs[i]) for i in range(len(buckets))]
    if len(set(names)) == len(names) and all(names):
        return names
    varying = [k for i, k in enumerate(keys) if len({v[i] for v, _ in buckets}) > 1]
    names = [
        describe.label([f"{k}={values[keys.index(k)]}" for k in varying]) for values, _ in buckets
    ]
    return [name or "all runs" for name in names]


# --- formats --------------------------------------------------------------------------


def default_metrics(groups: list[dict]) -> list[str]:
    """Every metric, the single-view accuracy only where some group has it (compare's
    default_columns)."""
    return [
        m
        for m in METRICS
        if m != compare.VIEWS_COLUMN or any(g.get(f"{m}_mean") is not None for g in groups)
    ]


def columns(keys: list[str], metrics: list[str]) -> list[str]:
    """The CSV's columns: the params grouped by (or the groups' names), counts, and four
    columns a metric."""
    lead = keys or ["config"]
    stat_columns = [f"{m}_{s}" for m in metrics for s in ("mean", "std", "min", "max")]
    return [*lead, "runs", "seeds", *stat_columns]


def cell(group: dict, metric: str) -> str:
    """`mean ± std [min, max]`, all to the mean's precision (four decimals below 10, else
    one; counts such as epochs: one); `mean ± -` for a single value."""
    mean = group.get(f"{metric}_mean")
    if mean is None:
        return ""
    values = [r.get(metric) for r in group["rows"] if r.get(metric) is not None]
    integers = all(isinstance(v, int) for v in values)
    digits = 1 if integers or abs(mean) >= 10 else 4
    std = group[f"{metric}_std"]
    if std is None:
        return f"{mean:.{digits}f} ± -"
    low, high = (group[f"{metric}_{s}"] for s in ("min", "max"))
    spread = f"[{low}, {high}]" if integers else f"[{low:.{digits}f}, {high:.{digits}f}]"
    return f"{mean:.{digits}f} ± {std:.{digits}f} {spread}"


def note(groups: list[dict], keys: list[str]) -> str:
    """One line on what the table shows."""
    by = ", ".join(keys) if keys else f"every param but {SEED}"
    return (
        f"by configuration ({by}): {len(groups)} group{'s' if len(groups) != 1 else ''} of "
        f"finished runs; each metric: mean ± std [min, max], {STD_NOTE}"
    )


def _table(groups: list[dict], keys: list[str], metrics: list[str]) -> list[list[str]]:
    lead = keys or ["config"]
    lines = [[*lead, "runs", "seeds", *metrics]]
    for g in groups:
        values = [str(g.get(k) if g.get(k) is not None else "") for k in lead]
        lines.append([*values, str(g["runs"]), g["seeds"], *(cell(g, m) for m in metrics)])
    return lines


def to_text(groups: list[dict], keys: list[str], metrics: list[str] | None = None) -> str:
    """The note, then an aligned plain-text table for the terminal."""
    lines = _table(groups, keys, default_metrics(groups) if metrics is None else metrics)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    body = [
        "  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip()
        for line in lines
    ]
    return "\n".join([note(groups, keys), *body]) + "\n"


def to_markdown(groups: list[dict], keys: list[str], metrics: list[str] | None = None) -> str:
    """The note as a paragraph, then the table (names escaped for Markdown)."""
    header, *rows = _table(groups, keys, default_metrics(groups) if metrics is None else metrics)
    lines = [note(groups, keys), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lead = len(keys) or 1  # names and values as Markdown shows them literally; numbers as they are
    lines += [
        "| " + " | ".join([*map(describe.md, line[:lead]), *line[lead:]]) + " |" for line in rows
    ]
    return "\n".join(lines) + "\n"


def to_csv(groups: list[dict], keys: list[str], metrics: list[str] | None = None) -> str:
    """Every number in its own column (std blank for a single run)."""
    buffer = io.StringIO()
    metrics = default_metrics(groups) if metrics is None else metrics
    writer = csv.DictWriter(buffer, fieldnames=columns(keys, metrics), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(groups)
    return buffer.getvalue()
