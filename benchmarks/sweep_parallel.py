"""Sweep wall time: the same 4-job sweep with the basic launcher, and with joblib running
2 jobs at a time (TensorFlow threads shared fairly, and left at all cores).

    .venv/bin/python benchmarks/sweep_parallel.py [--train-limit 12000] [--epochs 2]

Prints a table and writes benchmarks/results/sweep_parallel.{json,md}. Each sweep runs
in a fresh process in a temporary directory with its own SQLite store.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from common import env, save, table

VARIANTS = {
    "basic launcher (1 job at a time)": [],
    "joblib n_jobs=2, 1 TF thread each (default)": [
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    ],
    "joblib n_jobs=2, 2 TF threads each (oversubscribed)": [
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.threads=2",
    ],
}


def run_sweep(extra: list[str], args) -> tuple[float, int]:
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
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        experiment = client.get_experiment_by_name("digit-experiments")
        finished = [
            r
            for r in client.search_runs([experiment.experiment_id])
            if r.info.status == "FINISHED" and "hydra_job_num" in r.data.tags
        ]
        return seconds, len(finished)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-limit", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    rows = []
    for name, extra in VARIANTS.items():
        seconds, finished = run_sweep(extra, args)
        rows.append({"variant": name, "wall_seconds": round(seconds, 1), "finished_jobs": finished})
        print(f"{name:55s} {seconds:7.1f} s  {finished}/4 jobs finished", flush=True)
    base = rows[0]["wall_seconds"]
    for r in rows:
        r["speedup"] = round(base / r["wall_seconds"], 2)

    setup = (
        f"`benchmarks/sweep_parallel.py --train-limit {args.train_limit} --epochs "
        f"{args.epochs}`: 4 jobs (mlp,cnn x adam,sgd), {args.train_limit} training images, "
        f"{args.epochs} epochs each, one SQLite store per sweep."
    )
    markdown = table(
        ["variant", "wall seconds", "speed-up", "jobs finished"],
        [
            [r["variant"], r["wall_seconds"], f"{r['speedup']}x", f"{r['finished_jobs']}/4"]
            for r in rows
        ],
    )
    save("sweep_parallel", setup, {"rows": rows}, markdown)


if __name__ == "__main__":
    main()
