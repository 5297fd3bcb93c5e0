"""experiment=fast: 99% test accuracy with at most 15 s of training on 2 cores, and where
its time goes.

    .venv/bin/python benchmarks/fast.py [--repeat 3] [--profile-repeat 2] [--images 60000]

Two parts, each whole processes:
1. Runs: `python -m digit_experiments.train experiment=fast trainer.seed=S` for
   S = 1..repeat, each into its own SQLite store with everything tracked (logged model,
   plots, reports); what MLflow recorded (test accuracy, `train_seconds`) and the
   process's wall seconds, beside a `python -c "import tensorflow"` process (the floor
   every run pays), the two alternated.
2. Profile: the preset's training without tracking (benchmarks/throughput.py's worker)
   and one change at a time: batch size, tf.data instead of arrays, XLA, 1 thread, batch
   normalisation, bfloat16, steps per execution; per process the first epoch (tracing
   included) and the median of the others, over `--profile-repeat` alternated rounds.
Writes benchmarks/results/fast.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile

from accuracy import recorded
from common import ROOT, last_json_line, rounds, save, show, spread, store_runs, table, timed

PRESET = ["experiment=fast"]
# (label, overrides on top of the preset): one change at a time.
VARIANTS = [
    ("fast (batch 128, arrays, 8 steps per execution)", []),
    ("batch 64", ["trainer.batch_size=64"]),
    ("batch 256", ["trainer.batch_size=256"]),
    ("batch 512", ["trainer.batch_size=512"]),
    ("tf.data pipeline", ["trainer.pipeline=dataset"]),
    ("XLA", ["trainer.jit_compile=true"]),
    ("1 step per execution", ["trainer.steps_per_execution=1"]),
    ("1 thread", ["trainer.threads=1"]),
    ("batch normalisation", ["regularization=batchnorm"]),
    ("mixed bfloat16", ["trainer.precision=mixed_bfloat16"]),
]
TARGET_ACCURACY, TARGET_TRAIN_SECONDS, TARGET_WALL_SECONDS = 0.99, 15.0, 40.0


def tracked_run(seed: int, extra: list[str]) -> dict:
    overrides = [*PRESET, f"trainer.seed={seed}", *extra]
    with tempfile.TemporaryDirectory(prefix="fast-bench-") as tmp:
        wall, _ = timed([sys.executable, "-m", "digit_experiments.train", *overrides], cwd=tmp)
        (run,) = store_runs(tmp)
    shown = " ".join(["python -m digit_experiments.train", *overrides])
    return {"command": shown, "seed": seed, "wall_seconds": round(wall, 2), **recorded(run)}


def profile(label: str, extra: list[str], images: int) -> dict:
    overrides = [*PRESET, f"data.train_limit={images}", *extra]
    command = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--worker"]
    result = last_json_line(timed([*command, json.dumps(overrides)], cwd=ROOT)[1])
    seconds = result["epoch_seconds"]
    return {"first": seconds[0], "rest": statistics.median(seconds[1:] or seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="tracked runs (seeds 1..N)")
    parser.add_argument("--profile-repeat", type=int, default=2, help="rounds of the profile")
    parser.add_argument("--images", type=int, default=60000, help="profile: train + val")
    parser.add_argument("--only", help="profile variants separated by ';' (default: all)")
    parser.add_argument("overrides", nargs="*", help="extra overrides for the tracked runs")
    args = parser.parse_args()

    runs, imports = [], []
    for i, what in rounds(["run", "import"], args.repeat):
        if what == "run":
            runs.append(tracked_run(len(runs) + 1, args.overrides))
            print(f"round {i + 1}: run {runs[-1]}", flush=True)
        else:
            wall, _ = timed([sys.executable, "-c", "import tensorflow"], cwd=ROOT)
            imports.append(round(wall, 2))

    chosen = [v for v in VARIANTS if not args.only or v[0] in args.only.split(";")]
    epochs: dict[str, list[dict]] = {label: [] for label, _ in chosen}
    extra = dict(chosen)
    for i, label in rounds(list(epochs), args.profile_repeat):
        epochs[label].append(profile(label, extra[label], args.images))
        print(f"round {i + 1}: {label}: {epochs[label][-1]}", flush=True)

    accuracy = [r["test_accuracy"] for r in runs]
    train = [r["train_seconds"] for r in runs]
    wall = [r["wall_seconds"] for r in runs]
    met = (
        min(accuracy) >= TARGET_ACCURACY
        and max(train) <= TARGET_TRAIN_SECONDS
        and max(wall) <= TARGET_WALL_SECONDS
    )
    data = {
        "targets": {
            "test_accuracy": TARGET_ACCURACY,
            "train_seconds": TARGET_TRAIN_SECONDS,
            "wall_seconds": TARGET_WALL_SECONDS,
        },
        "met": met,
        "runs": runs,
        "test_accuracy": spread(accuracy, 4),
        "train_seconds": spread(train, 1),
        "wall_seconds": spread(wall, 1),
        "import_tensorflow_seconds": spread(imports, 2),
        "profile": {
            label: {
                "overrides": [*PRESET, *extra[label]],
                "first_epoch_seconds": spread([e["first"] for e in values], 2),
                "epoch_seconds": spread([e["rest"] for e in values], 2),
            }
            for label, values in epochs.items()
        },
    }
    lines = [
        [
            r["seed"],
            f"{r['test_accuracy']:.2%}",
            f"{r['train_seconds']:.1f}",
            f"{r['wall_seconds']:.1f}",
            r["run_id"],
        ]
        for r in runs
    ]
    markdown = table(["seed", "test accuracy", "train s", "wall s", "run id"], lines)
    markdown += (
        f"\n\nTargets: >= {TARGET_ACCURACY:.0%} with <= {TARGET_TRAIN_SECONDS:.0f} s of "
        f"training and <= {TARGET_WALL_SECONDS:.0f} s in all: {'met' if met else 'NOT met'} "
        f'by every run. `python -c "import tensorflow"`: '
        f"{show(data['import_tensorflow_seconds'], '{:.2f}')} s.\n\n"
    )
    markdown += table(
        ["variant", "first epoch s (tracing included)", "other epochs s"],
        [
            [label, show(v["first_epoch_seconds"], "{:.2f}"), show(v["epoch_seconds"], "{:.2f}")]
            for label, v in data["profile"].items()
        ],
    )
    setup = (
        f"`benchmarks/fast.py --repeat {args.repeat} --profile-repeat {args.profile_repeat} "
        f"--images {args.images}`: {args.repeat} tracked runs of `experiment=fast` (seeds 1.."
        f"{args.repeat}, whole processes, everything logged"
        + (f", with {' '.join(args.overrides)}" if args.overrides else "")
        + ") alternated with a bare TensorFlow "
        "import; then the preset's training without tracking, one change at a time, "
        f"{args.profile_repeat} alternated rounds (min / median / max)."
    )
    save("fast", setup, data, markdown)


if __name__ == "__main__":
    main()
