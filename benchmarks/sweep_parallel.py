"""Sweep wall time: the same 4-job sweep with the basic launcher, and with joblib running
2 jobs at a time (TensorFlow threads shared fairly, and left at all cores).

    .venv/bin/python benchmarks/sweep_parallel.py [--train-limit 12000] [--epochs 2]
                                                  [--repeat 3] [--only joblib]

Each sweep runs in a fresh process in a temporary directory with its own SQLite store.
The variants take turns for `--repeat` rounds (each round starting with the next one);
every sweep's wall time is recorded and shown as min / median / max. A variant's
speed-up is the median, over the rounds, of the basic launcher's time divided by its
time in the same round (min and max beside it). Writes
benchmarks/results/sweep_parallel.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from common import env, rounds, save, show, store_runs, table, variant_rows

# name -> (label, extra overrides). `basic` is the reference every other is divided by.
VARIANTS = {
    "basic": ("basic launcher (1 job at a time)", []),
    "joblib": (
        "joblib n_jobs=2, 1 TF thread each (default)",
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ),
    "joblib-2-threads": (
        "joblib n_jobs=2, 2 TF threads each (oversubscribed)",
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.threads=2"],
    ),
}
JOBS = 4


def run_sweep(extra: list[str], args) -> tuple[float, int]:
    """(wall seconds, jobs that finished) of one sweep in a fresh store."""
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        command = [
            sys.executable,
            "-m",
            "digit_experiments.train",
            "-m",
            "model=mlp,cnn",
            "optimizer=adam,sgd",
            f"data.train_limit={args.train_limit}",
            "data.test_limit=2000",
            f"trainer.epochs={args.epochs}",
            "trainer.early_stopping.enabled=false",
            "tracking.log_model=false",
            *extra,
        ]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=tmp, env=env(), capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"sweep failed: {' '.join(extra)}\n{result.stderr[-3000:]}")
        finished = [
            r
            for r in store_runs(tmp)
            if r.info.status == "FINISHED" and "hydra_job_num" in r.data.tags
        ]
        return seconds, len(finished)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-limit", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument(
        "--only",
        help="variants to compare with `basic` (which always runs), separated by ','; "
        f"of: {', '.join(list(VARIANTS)[1:])}",
    )
    args = parser.parse_args()
    chosen = ["basic", *(args.only.split(",") if args.only else list(VARIANTS)[1:])]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        parser.error(f"--only: no variant {unknown}; the variants: {list(VARIANTS)}")

    seconds: dict[str, list[float]] = {name: [] for name in chosen}
    finished: dict[str, list[int]] = {name: [] for name in chosen}
    for i, name in rounds(chosen, args.repeat):
        label, extra = VARIANTS[name]
        wall, done = run_sweep(extra, args)
        seconds[name].append(wall)
        finished[name].append(done)
        print(f"round {i + 1}: {label:55s} {wall:7.1f} s  {done}/{JOBS} jobs", flush=True)

    rows = variant_rows({name: VARIANTS[name][0] for name in chosen}, seconds, finished)
    setup = (
        f"`benchmarks/sweep_parallel.py --train-limit {args.train_limit} --epochs "
        f"{args.epochs} --repeat {args.repeat}`: {JOBS} jobs (mlp,cnn x adam,sgd), "
        f"{args.train_limit} training images, {args.epochs} epochs each, one SQLite store per "
        f"sweep; the variants alternated over {args.repeat} rounds."
    )
    markdown = table(
        [
            "variant",
            "wall seconds (min / median / max)",
            "speed-up (min / median / max)",
            "jobs finished",
        ],
        [
            [
                r["variant"],
                show(r["wall_seconds"]),
                show(r["speedup"], "{:.2f}", "x"),
                ", ".join(f"{n}/{JOBS}" for n in r["finished_jobs"]),
            ]
            for r in rows
        ],
    )
    save(
        "sweep_parallel",
        setup,
        {
            "repeat": args.repeat,
            "train_limit": args.train_limit,
            "epochs": args.epochs,
            "rows": rows,
        },
        markdown,
    )


if __name__ == "__main__":
    main()
