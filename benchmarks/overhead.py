"""Tracking overhead: a fully tracked run (Hydra + MLflow, everything logged) against the
same training in a plain Keras script, both as whole processes, alternated.

    .venv/bin/python benchmarks/overhead.py [--epochs 3] [--repeat 5] [--train-limit N]

Seed CNN, all 60,000 images (54,000 train / 6,000 validation, then the 10,000 test
images; --train-limit/--test-limit take class-balanced slices instead), tf.data
pipeline, batch 32, seed 42, in both. The tracked runs share one SQLite store that
exists before the first of them (as after a project's first run: creating a store runs
MLflow's database migrations once). Each round runs one pair, back to back, the two
going first in turn. The figure is the median of the pairs' ratios (tracked / plain),
with their min and max (target: at most 1.05); every wall time is recorded, and the
ratio of the two medians is shown beside it. Writes benchmarks/results/overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from common import ROOT, rounds, save, show, spread, table, timed


def commands(args) -> dict[str, list[str]]:
    tracked = [
        sys.executable,
        "-m",
        "digit_experiments.train",
        f"trainer.epochs={args.epochs}",
        "trainer.early_stopping.enabled=false",
    ]
    plain = [sys.executable, str(ROOT / "benchmarks" / "plain_keras.py"), f"--epochs={args.epochs}"]
    for key in ("train_limit", "test_limit"):
        value = getattr(args, key)
        if value is not None:
            tracked.append(f"data.{key}={value}")
            plain.append(f"--{key.replace('_', '-')}={value}")
    return {"plain": plain, "tracked": tracked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="pairs")
    parser.add_argument("--train-limit", type=int, help="a slice, for a quick check")
    parser.add_argument("--test-limit", type=int, help="a slice, for a quick check")
    args = parser.parse_args()
    runs = commands(args)
    seconds: dict[str, list[float]] = {"plain": [], "tracked": []}
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        store_s, _ = timed(
            [
                sys.executable,
                "-c",
                "import mlflow; mlflow.MlflowClient('sqlite:///mlflow.db').search_experiments()",
            ],
            cwd=tmp,
        )
        for i, name in rounds(list(runs), args.repeat):
            seconds[name].append(timed(runs[name], tmp)[0])
            if len(seconds["plain"]) == len(seconds["tracked"]):
                print(
                    f"{i + 1}: plain {seconds['plain'][-1]:.1f} s, "
                    f"tracked {seconds['tracked'][-1]:.1f} s",
                    flush=True,
                )
    plain, tracked = spread(seconds["plain"], 2), spread(seconds["tracked"], 2)
    # Each pair ran back to back, so its own ratio is steadier than the ratio of two
    # medians over minutes of this machine's drift: the figure is their median.
    ratios = spread([t / p for t, p in zip(seconds["tracked"], seconds["plain"])])
    result = {
        "epochs": args.epochs,
        "repeat": args.repeat,
        "train_limit": args.train_limit,
        "test_limit": args.test_limit,
        "plain_s": plain,
        "tracked_s": tracked,
        "pair_ratio": ratios,
        "ratio_of_medians": round(tracked["median"] / plain["median"], 3),
        "store_creation_s": round(store_s, 1),
    }
    images = f"{args.train_limit} images" if args.train_limit else "54,000 images"
    slices = "".join(
        f" --{key.replace('_', '-')} {getattr(args, key)}"
        for key in ("train_limit", "test_limit")
        if getattr(args, key) is not None
    )
    setup = (
        f"`benchmarks/overhead.py --epochs {args.epochs} --repeat {args.repeat}{slices}`: "
        "seed CNN, "
        f"{args.epochs} epochs on {images}, whole processes, {args.repeat} pairs, each "
        f"pair back to back and the two going first in turn. (Creating a new SQLite store, "
        f"once per project: {result['store_creation_s']} s.)"
    )
    rows = [
        ["plain Keras script (benchmarks/plain_keras.py), s", show(plain)],
        ["tracked run (Hydra + MLflow, all artifacts, logged model), s", show(tracked)],
        [
            "**tracked / plain, per pair** (" + ", ".join(map(str, ratios["values"])) + ")",
            "**" + show(ratios, "{:.3f}") + "**",
        ],
        ["ratio of the medians (secondary)", result["ratio_of_medians"]],
    ]
    markdown = table(["what", "min / median / max"], rows)
    save("overhead", setup, result, markdown)


if __name__ == "__main__":
    main()
