"""The presets on a GPU: `experiment=fast` and `experiment=best_cnn` as they are, then each
in mixed precision (`trainer.precision=mixed_float16`), each run as a whole process into
its own SQLite store, as benchmarks/accuracy.py runs them.

    KERAS_BACKEND=jax python benchmarks/gpu.py [--only ROW[,ROW...]] [--keep DIR]
        [OVERRIDES...]

The figures are what MLflow recorded (test accuracy, training seconds, the run's `device`
tag) with the card's name in `machine`. Rows run one at a time, so one that is cut short
loses only itself: each finished row is merged into benchmarks/results/gpu.{json,md} at
once. On a CPU-only machine it runs too (the runs' device is then `cpu`), which is how
the tests check it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from accuracy import run_row
from common import RESULTS, chosen_rows, machine, save, table

# label -> (benchmarks/accuracy.py's row, extra overrides)
ROWS = {
    "fast": ("fast", []),
    "fast_mixed": ("fast", ["trainer.precision=mixed_float16"]),
    "best_cnn": ("best_cnn", []),
    "best_cnn_mixed": ("best_cnn", ["trainer.precision=mixed_float16"]),
}


def device_of(run_id: str, store: Path) -> str | None:
    """The `device` tag the run recorded (what Keras' backend trained it on)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db")
    return client.get_run(run_id).data.tags.get("device")


def write(rows: dict) -> None:
    setup = (
        "`benchmarks/gpu.py`: the presets on a GPU, each run as a whole process into its "
        "own SQLite store; the figures are what MLflow recorded, the device is the run's "
        "`device` tag. Rows are measured one at a time (`--only ROW`)."
    )
    lines = [
        [
            label,
            row["device"],
            f"`{row['command']}`",
            f"{row['test_accuracy']:.4f}",
            f"{row['epochs_trained']} ({row['best_epoch']})",
            f"{row['train_seconds']:.1f}",
            f"{row['wall_seconds']:.1f}",
            row["run_id"],
        ]
        for label, row in rows.items()
    ]
    header = ["row", "device", "command", "test accuracy", "epochs (best)", "training s"]
    markdown = table([*header, "process s", "run"], lines)
    not_run = [label for label in ROWS if label not in rows]
    save("gpu", setup, {"rows": rows, "not_run": not_run}, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"rows separated by ',' (of: {', '.join(ROWS)})")
    parser.add_argument("--keep", type=Path, help="make each row's store in KEEP/ROW")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    chosen = chosen_rows(parser, args.only, ROWS)
    taken = [str(args.keep / row) for row in chosen if args.keep and (args.keep / row).exists()]
    if taken:  # refused before anything runs, as benchmarks/accuracy.py does
        parser.error(f"--keep: {', '.join(taken)} already exists; a kept store is never mixed")
    path = RESULTS / "gpu.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        for label in chosen:
            name, extra = ROWS[label]
            keep = (args.keep or Path(tmp)).resolve() / label
            record = run_row(name, [*extra, *args.overrides], keep=keep)
            record["device"] = device_of(record["run_id"], keep / name)
            rows[label] = record
            rows = {key: rows[key] for key in ROWS if key in rows}  # a stable order
            write(rows)  # now: a later row cut short loses only itself
            print(f"{label}: {json.dumps(record)[:300]}", flush=True)
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
