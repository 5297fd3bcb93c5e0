"""Tracking overhead: a fully tracked run (Hydra + MLflow, everything logged) against the
same training in a plain Keras script, both as whole processes, alternated.

    .venv/bin/python benchmarks/overhead.py [--epochs 3] [--repeat 5]

Seed CNN, all 60,000 images (54,000 train / 6,000 validation, then the 10,000 test
images), tf.data pipeline, batch 32, seed 42, in both. The tracked runs share one SQLite
store that exists before the first of them (as after a project's first run: creating a
store runs MLflow's database migrations once). Prints the wall times and their ratio
(target: at most 1.05) and writes benchmarks/results/overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

from common import ROOT, save, table, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tracked_cmd = [
        sys.executable,
        "-m",
        "digit_experiments.train",
        f"trainer.epochs={args.epochs}",
        "trainer.early_stopping.enabled=false",
    ]
    plain_cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "plain_keras.py"),
        f"--epochs={args.epochs}",
    ]
    tracked, plain = [], []
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        store_s, _ = timed(
            [
                sys.executable,
                "-c",
                "import mlflow; mlflow.MlflowClient('sqlite:///mlflow.db').search_experiments()",
            ],
            cwd=tmp,
        )
        for i in range(args.repeat):
            # Each goes first in every other pair: this machine's speed drifts, and what
            # runs second in a pair would otherwise always meet the drift's later half.
            if i % 2 == 0:
                plain.append(timed(plain_cmd, tmp)[0])
                tracked.append(timed(tracked_cmd, tmp)[0])
            else:
                tracked.append(timed(tracked_cmd, tmp)[0])
                plain.append(timed(plain_cmd, tmp)[0])
            print(f"{i + 1}: plain {plain[-1]:.1f} s, tracked {tracked[-1]:.1f} s", flush=True)
    result = {
        "epochs": args.epochs,
        "plain_s": [round(s, 2) for s in plain],
        "tracked_s": [round(s, 2) for s in tracked],
        "plain_median_s": round(statistics.median(plain), 1),
        "tracked_median_s": round(statistics.median(tracked), 1),
        "store_creation_s": round(store_s, 1),
    }
    result["ratio"] = round(result["tracked_median_s"] / result["plain_median_s"], 3)
    # This machine's speed drifts between minutes: each pair ran back to back, so the
    # median of the pairs' own ratios is the steadier figure.
    pair_ratios = [t / p for t, p in zip(tracked, plain)]
    result["pair_ratios"] = [round(r, 3) for r in pair_ratios]
    result["median_pair_ratio"] = round(statistics.median(pair_ratios), 3)
    setup = (
        f"`benchmarks/overhead.py --epochs {args.epochs} --repeat {args.repeat}`: seed CNN, "
        f"{args.epochs} epochs on 54,000 images, whole processes, median of {args.repeat} "
        f"alternated pairs. (Creating a new SQLite store, once per project: "
        f"{result['store_creation_s']} s.)"
    )
    rows = [
        ["plain Keras script (benchmarks/plain_keras.py)", result["plain_median_s"]],
        ["tracked run (Hydra + MLflow, all artifacts, logged model)", result["tracked_median_s"]],
        ["ratio of the medians", result["ratio"]],
        [
            "median of the pairs' ratios (" + ", ".join(map(str, result["pair_ratios"])) + ")",
            result["median_pair_ratio"],
        ],
    ]
    save("overhead", setup, result, table(["what", "wall seconds"], rows))


if __name__ == "__main__":
    main()
