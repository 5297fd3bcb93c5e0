"""Accuracy: the recorded runs the README's Results show, each run as a whole process.

    .venv/bin/python benchmarks/accuracy.py [--only NAME[,NAME...]] [--repeat 1]
        [--seeds 1,2,3] [OVERRIDES...]

Each row runs `python -m digit_experiments.train ROW'S OVERRIDES [OVERRIDES...]` in a
temporary directory with its own SQLite store, then reads back what MLflow recorded:
the run id, test accuracy, macro F1, epochs trained, best epoch, training seconds, with
the process's wall seconds and the machine. The rows (see ROWS): seed_cnn (the
defaults, what `make train` runs), seed_mlp, best_mlp, best_cnn (about 23 minutes on 2
cores) and mlp_vs_cnn (the sweep: its two children, the whole sweep's wall time, and
the table `digits compare --markdown` writes). `--repeat N` runs each chosen row N
times, the rows alternated round by round. Extra OVERRIDES (e.g. data.train_limit=1000
for a quick check) are passed to every run and shown in its command. `--seeds 1,2,3`
runs each chosen row as one sweep over those seeds (`-m trainer.seed=1,2,3 ...`): its
children are the repeats, and the README shows their mean, standard deviation and best.
`--joined KEEP` trains nothing: it adds to a row's recorded sweep the runs that joined
it later in its kept store KEEP/ROW (more seeds for an ensemble, each trained with
`python -m digit_experiments.train ROW'S OVERRIDES trainer.seed=N
tracking.parent_run_id=SWEEP`), each with the overrides it recorded; the README's row
keeps the sweep's own runs, and `benchmarks/ensemble.py` may average the joined ones too.

benchmarks/results/accuracy.json is merged, not replaced: the rows run now replace
their earlier entry and the others stay, so rows can be measured one at a time.
Writes benchmarks/results/accuracy.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import tempfile
from pathlib import Path

from common import (
    DIGITS,
    RESULTS,
    chosen_rows,
    machine,
    rounds,
    save,
    store_runs,
    table,
    timed,
)

# name -> (what it is, the overrides of its command). A sweep's overrides start with -m.
ROWS = {
    "best_cnn": (
        "best CNN: VGG-style, batch norm, augmentation, one-cycle, weight EMA",
        ["experiment=best_cnn"],
    ),
    "best_mlp": (
        "best MLP: 1024-512, batch norm, dropout, elastic distortions, one-cycle, EMA",
        ["experiment=best_mlp"],
    ),
    "fast": ("fast: the seed CNN at half its filters, one-cycle, 3 epochs", ["experiment=fast"]),
    "seed_cnn": ("seed CNN + dropout", []),
    "seed_mlp": ("seed MLP", ["model=mlp"]),
    "mlp_vs_cnn": ("the seed's MLP and CNN as one sweep", ["-m", "experiment=mlp_vs_cnn"]),
}
METRICS = ("test_accuracy", "test_f1_macro", "epochs_trained", "best_epoch", "train_seconds")
COMPARE_COLUMNS = "job,status,model,regularization,test_accuracy,test_f1_macro,epochs,seconds"


def recorded(run) -> dict:
    """What one MLflow run recorded, as the results keep it."""
    metrics = run.data.metrics
    out = {"run_id": run.info.run_id, "status": run.info.status}
    for key in METRICS:
        value = metrics.get(key)
        whole = key in ("epochs_trained", "best_epoch") and value is not None
        out[key] = int(value) if whole else value
    if "single_view_test_accuracy" in metrics:  # trainer.test_time_shift: the bare network's
        out["single_view_test_accuracy"] = metrics["single_view_test_accuracy"]
    return out


def run_row(
    name: str, extra: list[str], seeds: str | None = None, keep: Path | None = None
) -> dict:
    """Run one row's command (with `seeds`: as a sweep over them) into a fresh store;
    its record. With `keep`, the store is made in (and left in) keep/NAME, for commands
    that read the runs afterwards (`digits ensemble`, benchmarks/ensemble.py)."""
    overrides = [*ROWS[name][1], *extra]
    if seeds:
        overrides = ["-m", f"trainer.seed={seeds}", *[o for o in overrides if o != "-m"]]
    command = [sys.executable, "-m", "digit_experiments.train", *overrides]
    shown = " ".join(["python -m digit_experiments.train", *overrides])
    with contextlib.ExitStack() as stack:
        if keep is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="accuracy-bench-"))
        else:
            tmp = str(keep / name)
            Path(tmp).mkdir(parents=True, exist_ok=False)  # a fresh store, never mixed
        wall, _ = timed(command, cwd=tmp)
        runs = store_runs(tmp)
        record = {
            "command": shown,
            "wall_seconds": round(wall, 1),
            "machine": machine(),
            "date": datetime.date.today().isoformat(),
        }
        if "-m" not in overrides:
            (run,) = runs
            return {**record, **recorded(run)}
        (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        markdown = Path(tmp) / "compare.md"
        timed(
            [
                *DIGITS,
                "--tracking-uri",
                f"sqlite:///{tmp}/mlflow.db",
                "compare",
                "--columns",
                COMPARE_COLUMNS,
                "--markdown",
                str(markdown),
            ],
            cwd=tmp,
        )
        children.sort(key=lambda r: int(r.data.tags.get("hydra_job_num", 0)))
        return {
            **record,
            "parent_run_id": parent.info.run_id,
            "status": parent.info.status,
            "children": [
                {
                    "model": r.data.tags.get("model"),
                    **({"seed": int(r.data.params["trainer.seed"])} if seeds else {}),
                    **recorded(r),
                }
                for r in children
            ],
            "compare_command": f"digits compare --columns {COMPARE_COLUMNS} --markdown FILE",
            "compare_markdown": markdown.read_text(),
        }


def joined_runs(name: str, record: dict, keep: Path) -> list[dict]:
    """The runs in keep/NAME that joined `record`'s sweep after it ended: finished
    children of its parent that the sweep itself did not make, by seed."""
    store = keep / name
    if not (store / "mlflow.db").is_file():
        raise SystemExit(f"{name}: no store {store}/mlflow.db (accuracy.py --keep makes it)")
    parent = record.get("parent_run_id")
    runs = store_runs(store)
    if parent is None or parent not in {r.info.run_id for r in runs}:
        raise SystemExit(f"{name}: {store} does not hold the recorded sweep {parent}")
    own = {c["run_id"] for c in record["children"]}
    joined = [
        r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent
        and r.info.run_id not in own
        and r.data.tags.get("model") != "ensemble"
    ]
    unfinished = [r.info.run_id for r in joined if r.info.status != "FINISHED"]
    if unfinished:
        raise SystemExit(f"{name}: runs {unfinished} joined the sweep but did not finish")
    joined.sort(key=lambda r: int(r.data.params["trainer.seed"]))
    return [
        {
            "model": r.data.tags.get("model"),
            "seed": int(r.data.params["trainer.seed"]),
            "command": " ".join(
                [
                    "python -m digit_experiments.train",
                    r.data.tags.get("overrides", ""),
                    "tracking.parent_run_id=SWEEP",
                ]
            ),
            "date": datetime.date.fromtimestamp(r.info.start_time / 1000).isoformat(),
            "git_commit": r.data.tags.get("git_commit"),
            # A run that died and was continued (trainer.resume) says after which epoch.
            **{k: int(v) for k, v in r.data.tags.items() if k == "resumed_after_epoch"},
            **recorded(r),
        }
        for r in joined
    ]


def summary_rows(rows: dict) -> list[list]:
    """One line per recorded run (a sweep: one per child) for accuracy.md."""
    lines = []
    for name, row in rows.items():
        for i, run in enumerate(row["runs"], start=1):
            parts = [(part, False) for part in run.get("children", [run])]
            parts += [(part, True) for part in run.get("joined", [])]
            for part, joined in parts:
                if "seed" in part:
                    label = f"{name} (seed {part['seed']}{', joined' if joined else ''})"
                elif "model" in part:
                    label = f"{name} ({part['model']})"
                else:
                    label = name
                lines.append(
                    [
                        label,
                        i,
                        f"`{part.get('command', run['command'])}`",
                        f"{part['test_accuracy']:.4f}",
                        f"{part['test_f1_macro']:.4f}",
                        f"{part['epochs_trained']} ({part['best_epoch']})",
                        f"{part['train_seconds']:.1f}",
                        "" if joined else f"{run['wall_seconds']:.1f}",
                        part["run_id"],
                    ]
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"rows separated by ',' (of: {', '.join(ROWS)})")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each row, alternated")
    parser.add_argument(
        "--seeds", help="e.g. 1,2,3: each row as one sweep over these trainer.seed values"
    )
    parser.add_argument(
        "--keep", type=Path, help="make each row's store in KEEP/ROW and leave it there"
    )
    parser.add_argument(
        "--joined",
        type=Path,
        help="train nothing: add the runs that joined each row's recorded sweep in KEEP/ROW",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    chosen = chosen_rows(parser, args.only, ROWS)
    path = RESULTS / "accuracy.json"
    if args.joined is not None:
        if args.seeds or args.keep or args.overrides or args.repeat != 1:
            parser.error("--joined trains nothing: it takes only --only")
        rows = json.loads(path.read_text())["rows"] if path.exists() else {}
        for name in chosen:
            record = rows.get(name, {}).get("runs", [{}])[-1]
            if "children" not in record:
                parser.error(f"--joined: {name} has no recorded sweep (record it with --seeds)")
            record["joined"] = joined_runs(name, record, args.joined.resolve())
            print(f"{name}: {len(record['joined'])} joined runs", flush=True)
        save_rows(rows)
        return
    # Refused before anything trains: otherwise a later round or row fails hours in.
    if args.keep is not None and args.repeat > 1:
        parser.error("--keep keeps one round's stores (KEEP/ROW): use it with --repeat 1")
    taken = [str(args.keep / name) for name in chosen if args.keep and (args.keep / name).exists()]
    if taken:
        parser.error(f"--keep: {', '.join(taken)} already exists; a kept store is never mixed")

    produced: dict[str, list[dict]] = {name: [] for name in chosen}
    for i, name in rounds(chosen, args.repeat):
        seeds = args.seeds if "-m" not in ROWS[name][1] else None  # not the mlp_vs_cnn sweep
        produced[name].append(run_row(name, args.overrides, seeds, args.keep))
        print(f"round {i + 1}: {name}: {json.dumps(produced[name][-1])[:400]}", flush=True)

    rows = json.loads(path.read_text())["rows"] if path.exists() else {}
    for name in chosen:
        rows[name] = {"description": ROWS[name][0], "extra": args.overrides, "runs": produced[name]}
    save_rows(rows)


def save_rows(rows: dict) -> None:
    """accuracy.{json,md}, the rows in ROWS' order."""
    rows = {name: rows[name] for name in ROWS if name in rows}
    setup = (
        "`benchmarks/accuracy.py`: each row's command as a whole process, into its own "
        "SQLite store; the figures are what MLflow recorded. Rows are measured separately "
        "(`--only NAME`): each run records its own machine and date."
    )
    markdown = table(
        [
            "row",
            "repeat",
            "command",
            "test accuracy",
            "macro F1",
            "epochs (best)",
            "train s",
            "wall s",
            "run id",
        ],
        summary_rows(rows),
    )
    for run in rows.get("mlp_vs_cnn", {}).get("runs", []):
        markdown += f"\n\n`{run['compare_command']}` for `{run['command']}`:\n\n"
        markdown += run["compare_markdown"].strip()
    save("accuracy", setup, {"rows": rows}, markdown)


if __name__ == "__main__":
    main()
