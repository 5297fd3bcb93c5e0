"""Recipe candidates for `experiment=best_cnn`, several seeds each, many runs at once:
what a GPU is for when a 3-seed sweep of one candidate takes 75 minutes on 2 cores.

    KERAS_BACKEND=jax python benchmarks/recipes.py [--variants NAME[,NAME...]]
        [--seeds 1,2,3] [--parallel N] [--deadline SECONDS] [OVERRIDES...]

Each (variant, seed) is a whole tracked run into its own SQLite store, started as soon as
a slot is free; the figures are what MLflow recorded. Every finished run is merged into
benchmarks/results/recipes.{json,md} at once, so runs cut off by --deadline lose only
themselves. The runs share the machine, so their seconds say nothing of a run alone
(benchmarks/gpu.py measures that): compare the variants' accuracy, not their speed.
Every variant keeps the preset's cost on 2 CPU cores within a few percent (its comment
says what it changes), so a winner here is a candidate for a recorded CPU sweep.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from accuracy import recorded as recorded_metrics
from common import chosen_rows, env, machine, save, store_runs, table

VARIANTS = {
    "best_cnn": [],  # the control: the preset as it is
    # Decoupled weight decay (Keras scales it by the learning rate).
    "adamw": ["optimizer=adamw", "optimizer.learning_rate=0.002", "optimizer.weight_decay=0.02"],
    # Stronger augmentation: 15 degrees, 15% shifts and zooms instead of 10 / 10%.
    "augment15": [
        "regularization.augment.rotation=15.0",
        "regularization.augment.shift=0.15",
        "regularization.augment.zoom=0.15",
    ],
    # Both blocks 5x5 (12 -> 8 -> 4 in the second, as in An et al.'s M5 net); about 15%
    # more multiply-adds than the preset.
    "kernel5": ["model.kernel_size=[5,5]"],
    # A wider head: 512 units instead of 256 (the convs, most of the work, as they are).
    "dense512": ["model.dense_units=[512]"],
}


def recorded(run) -> dict:
    """accuracy.py's record of a run, with its seed and the device it trained on."""
    return {
        "seed": int(run.data.params["trainer.seed"]),
        **recorded_metrics(run),
        "device": run.data.tags.get("device"),
    }


def summary(runs: list[dict]) -> dict:
    accuracies = [r["test_accuracy"] for r in runs]
    return {
        "seeds": [r["seed"] for r in runs],
        "mean": statistics.mean(accuracies),
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "min": min(accuracies),
        "max": max(accuracies),
    }


def write(variants: dict, chosen: list[str], extra: list[str], not_finished: list[str]) -> None:
    setup = (
        "`benchmarks/recipes.py`: candidates for `experiment=best_cnn`, each seed a whole "
        "tracked run into its own SQLite store, many at once on one machine (their seconds "
        "are shared, not a run's alone); the figures are what MLflow recorded."
    )
    lines = []
    for name in [n for n in chosen if n in variants]:
        runs, s = variants[name]["runs"], variants[name]["summary"]
        lines.append(
            [
                name,
                " ".join(f"`{o}`" for o in VARIANTS[name]) or "(the preset)",
                len(runs),
                f"{s['mean']:.2%} ± {s['std']:.2%}",
                f"{s['min']:.2%} / {s['max']:.2%}",
                ", ".join(f"{r['seed']}: {r['test_accuracy']:.2%}" for r in runs),
                ", ".join(r["run_id"][:8] for r in runs),
            ]
        )
    header = ["variant", "overrides", "runs", "mean ± std", "min / max", "per seed", "runs"]
    data = {
        "date": datetime.date.today().isoformat(),
        "extra_overrides": extra,
        "variants": {name: variants[name] for name in chosen if name in variants},
        "not_finished": not_finished,
    }
    save("recipes", setup, data, table(header, lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", help=f"names separated by ',' (of: {', '.join(VARIANTS)})")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--deadline", type=float, help="seconds: then every run still going ends")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    chosen = chosen_rows(parser, args.variants, VARIANTS, flag="--variants")
    seeds = [int(s) for s in args.seeds.split(",")]
    # Seed-major, so a deadline leaves every variant with its first seeds rather than
    # the first variants with all of theirs.
    jobs = [(name, seed) for seed in seeds for name in chosen]
    environ = {**env(), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # share one GPU
    started = time.monotonic()
    variants: dict = {}
    running: dict = {}
    with tempfile.TemporaryDirectory(prefix="recipes-bench-") as tmp:
        while jobs or running:
            while jobs and len(running) < args.parallel:
                name, seed = jobs.pop(0)
                store = Path(tmp) / f"{name}-{seed}"
                store.mkdir()
                command = [
                    sys.executable,
                    "-m",
                    "digit_experiments.train",
                    "experiment=best_cnn",
                    *VARIANTS[name],
                    f"trainer.seed={seed}",
                    *args.overrides,
                ]
                log = (store / "log.txt").open("w")
                process = subprocess.Popen(
                    command, cwd=store, env=environ, stdout=log, stderr=subprocess.STDOUT
                )
                running[process] = (name, seed, store)
            time.sleep(1)
            if args.deadline and time.monotonic() - started > args.deadline:
                jobs.clear()  # nothing new starts; what runs ends now
                for process in running:
                    process.kill()
            for process in [p for p in running if p.poll() is not None]:
                name, seed, store = running.pop(process)
                if process.returncode != 0:
                    if jobs == [] and args.deadline and process.returncode < 0:
                        print(f"{name} seed {seed}: cut off by --deadline", flush=True)
                        continue
                    tail = (store / "log.txt").read_text()[-1500:]
                    print(f"{name} seed {seed}: exit {process.returncode}\n{tail}", flush=True)
                    continue
                (run,) = store_runs(store)
                record = recorded(run)
                variants.setdefault(name, {"overrides": VARIANTS[name], "runs": []})
                variants[name]["runs"].append(record)
                variants[name]["runs"].sort(key=lambda r: r["seed"])
                variants[name]["summary"] = summary(variants[name]["runs"])
                print(f"{name} seed {seed}: {json.dumps(record)}", flush=True)
                write(variants, chosen, args.overrides, [])
    finished = {(n, r["seed"]) for n, v in variants.items() for r in v["runs"]}
    missing = [f"{n} seed {s}" for s in seeds for n in chosen if (n, s) not in finished]
    write(variants, chosen, args.overrides, missing)
    print(f"machine: {machine()}; {datetime.date.today().isoformat()}; not finished: {missing}")


if __name__ == "__main__":
    main()
