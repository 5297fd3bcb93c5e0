"""Ensemble: `digits ensemble` over a recorded sweep, as a whole process.

    .venv/bin/python benchmarks/accuracy.py --only best_cnn --seeds 1,2,3 --keep DIR
    .venv/bin/python benchmarks/ensemble.py DIR/best_cnn [--top K | --all] [--row best_cnn]
        [--test-time-shift N]

The first command records the sweep (accuracy.json) and leaves its SQLite store in
DIR/best_cnn; this one runs `digits ensemble --parent SWEEP --top K` in that store and
reads back what MLflow recorded on the ensemble run: its test accuracy and macro F1 on
MNIST's full test set, each member's run id and test accuracy, the gain over the best
member, and the command's wall seconds. Members are checked against accuracy.json's
record of the same sweep (its own runs, and those that joined it later: `accuracy.py
--joined`), so the README's ensemble row belongs to its seeds' row. With
`--test-time-shift N` the ensemble answers each picture in shifted views (test-time
augmentation, `digits ensemble --test-time-shift`; N=0: none): its entry is kept beside
the plain one (key `ROW+shiftN`), with the ensemble's accuracy without the views. Without
it the ensemble answers in the views its members ship, if they all ship the same (as
`digits ensemble` does), and its entry says so the same way.

With `--all` the members are every finished run of the sweep's experiment in the store,
none picked by its score: the sweep's, the seeds that joined it, and variants of the row's
command run on their own beside it (`python -m digit_experiments.train experiment=best_cnn
model.kernel_size=[7,3] trainer.seed=11`, started in DIR/best_cnn), each recorded with
its command, its own test accuracy and its training time (key `ROW+all`).

Writes benchmarks/results/ensemble.{json,md} (merged: one entry per row name).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from accuracy import recorded
from common import DIGITS, RESULTS, machine, save, store_runs, table, timed


def sweep_of(runs: list, row: str) -> object:
    """The one sweep parent in a kept store (accuracy.py --keep makes one per row)."""
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    if len(parents) != 1:
        raise SystemExit(f"{row}: expected one sweep in the store, found {len(parents)}")
    return parents[0]


def recorded_sweep(row: str, parent_id: str) -> dict:
    """accuracy.json's record of this sweep: the members must be the runs it shows."""
    rows = json.loads((RESULTS / "accuracy.json").read_text())["rows"]
    for run in rows.get(row, {}).get("runs", []):
        if run.get("parent_run_id") == parent_id:
            return run
    raise SystemExit(
        f"{row}: accuracy.json has no record of sweep {parent_id}; record it first with "
        f"benchmarks/accuracy.py --only {row} --seeds ... --keep DIR"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path, help="a row's kept store (accuracy.py --keep DIR)")
    members = parser.add_mutually_exclusive_group()
    members.add_argument("--top", type=int, default=3, help="members: the K best runs")
    members.add_argument(
        "--all",
        action="store_true",
        help="members: every finished run of the sweep's experiment (variants included)",
    )
    parser.add_argument("--row", help="its accuracy.json row (default: the folder's name)")
    parser.add_argument(
        "--test-time-shift",
        type=int,
        metavar="N",
        help="shifted views (0: none; default: the members' own, when they all ship the same)",
    )
    args = parser.parse_args()
    store = args.store.resolve()
    row = args.row or store.name
    if not (store / "mlflow.db").is_file():
        raise SystemExit(f"{store}: no mlflow.db (make it with accuracy.py --keep)")

    runs = store_runs(store)
    parent = sweep_of(runs, row)
    sweep = recorded_sweep(row, parent.info.run_id)
    command = ["ensemble", "--parent", parent.info.run_id, "--top", str(args.top)]
    if args.all:
        # `--top` over all of them: the same members as `--runs` with every id, and a
        # command that reads back the experiment instead of listing ten run ids.
        experiment, count = every_member(store, parent.info.experiment_id)
        command = ["ensemble", "--experiment", experiment, "--top", str(count)]
    if args.test_time_shift is not None:
        command += ["--test-time-shift", str(args.test_time_shift)]
    uri = f"sqlite:///{store}/mlflow.db"
    wall, _ = timed([*DIGITS, "--tracking-uri", uri, *command], cwd=store)

    made = [r for r in store_runs(store) if r.data.tags.get("model") == "ensemble"]
    run = max(made, key=lambda r: r.info.start_time)  # this command's (a rerun adds one)
    metrics = run.data.metrics
    members = run.data.tags["ensemble.members"].split(",")
    joined = {c["run_id"] for c in sweep.get("joined", [])}
    accuracy_of = {c["run_id"]: c for c in [*sweep["children"], *sweep.get("joined", [])]}
    if args.all:
        by_id = {r.info.run_id: r for r in runs}
        accuracy_of |= {m: variant(by_id[m], row) for m in members if m not in accuracy_of}
    missing = [m for m in members if m not in accuracy_of]
    if missing:
        raise SystemExit(f"{row}: members {missing} are not in accuracy.json's sweep")
    entry = {
        "row": row,
        "command": " ".join(["digits", *command]),
        "sweep_command": sweep["command"],
        "sweep_run_id": parent.info.run_id,
        "run_id": run.info.run_id,
        "test_accuracy": metrics["test_accuracy"],
        "test_f1_macro": metrics["test_f1_macro"],
        "gain_over_best_member": metrics["gain_over_best_member"],
        # What the ensemble did (asked for, or its members' own views), as it recorded it.
        "test_time_shift": int(run.data.params["test_time_shift"]),
        **(
            {"single_view_test_accuracy": metrics["single_view_test_accuracy"]}
            if "single_view_test_accuracy" in metrics
            else {}
        ),
        "members": [
            {
                "run_id": m,
                "seed": accuracy_of[m].get("seed"),
                **({"joined": True, "command": accuracy_of[m]["command"]} if m in joined else {}),
                **(
                    {k: v for k, v in accuracy_of[m].items() if k != "seed"}
                    if accuracy_of[m].get("variant")
                    else {}
                ),
                "test_accuracy": metrics[f"member_{i}_test_accuracy"],
            }
            for i, m in enumerate(members)
        ],
        "wall_seconds": round(wall, 1),
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
    }
    print(json.dumps(entry), flush=True)

    path = RESULTS / "ensemble.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else {}
    key = f"{row}+all" if args.all else row
    rows[key if args.test_time_shift is None else f"{key}+shift{args.test_time_shift}"] = entry
    lines = [
        [
            name,
            f"`{e['command']}`",
            ", ".join(member_text(m) for m in e["members"]),
            f"{e['test_accuracy']:.4f}",
            f"{e['test_f1_macro']:.4f}",
            f"{e['gain_over_best_member']:+.4f}",
            f"{e['wall_seconds']:.1f}",
            e["run_id"],
        ]
        for name, e in rows.items()
    ]
    setup = (
        "`benchmarks/ensemble.py`: `digits ensemble` over the sweep that "
        "`benchmarks/accuracy.py --seeds` recorded, in that sweep's store; the figures are "
        "what MLflow recorded on the ensemble run (MNIST's full test set)."
    )
    header = ["row", "command", "members (test accuracy)", "test accuracy", "macro F1"]
    header += ["gain over best member", "wall s", "run id"]
    save("ensemble", setup, {"rows": rows}, table(header, lines))


def every_member(store: Path, experiment_id: str) -> tuple[str, int]:
    """The experiment's name, and how many runs `digits ensemble --experiment` can take
    from it: found as that command finds them (finished, no sweep parent, no ensemble)."""
    from mlflow.tracking import MlflowClient

    from digit_experiments.app.ensemble import MODEL
    from digit_experiments.inference.registry import candidate_runs

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    name = client.get_experiment(experiment_id).name
    runs = candidate_runs(client, experiment=name)
    return name, sum(r.data.tags.get("model") != MODEL for r in runs)


def variant(run, row: str) -> dict:
    """A member run on its own beside the sweep (not one of its seeds): its command and
    what it recorded. One that names the sweep as its parent must be recorded first."""
    if run.data.tags.get("mlflow.parentRunId"):
        raise SystemExit(
            f"{row}: run {run.info.run_id} joined a sweep but accuracy.json does not have it; "
            f"record it first with benchmarks/accuracy.py --only {row} --joined DIR"
        )
    own = recorded(run)  # as accuracy.json keeps a run
    return {
        "variant": True,
        "seed": int(run.data.params["trainer.seed"]),
        "command": f"python -m digit_experiments.train {run.data.tags.get('overrides', '')}",
        "own_test_accuracy": own["test_accuracy"],
        **{k: own[k] for k in ("single_view_test_accuracy",) if k in own},
        "train_seconds": own["train_seconds"],
    }


def member_text(member: dict) -> str:
    kind = ", joined" if member.get("joined") else ", variant" if member.get("variant") else ""
    return f"{member['test_accuracy']:.4f} (seed {member['seed']}{kind})"


if __name__ == "__main__":
    main()
