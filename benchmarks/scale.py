"""Team scale on this machine: the same 8-job sweep with the basic launcher, joblib and
Ray against the `digits stack` (PostgreSQL + mlflow server + Ray head on 127.0.0.1), and
what one run's tracking costs against that server vs the embedded SQLite store.

    .venv/bin/python benchmarks/scale.py [--train-limit 3000] [--epochs 2] [--repeat 2]
                                         [--run-repeat 3]

Sweeps: 8 jobs (mlp x adam, sgd, rmsprop, adamw x seed 1, 2), each variant in turn for
`--repeat` rounds, every job 1 TensorFlow thread (joblib and Ray: 2 jobs at a time on the
2 CPUs). Wall seconds per sweep, and each variant's speed-up over the basic launcher in
the same round. Tracking cost: one small run (the seed MLP, 1 epoch) alternately against
the server and against SQLite, `--run-repeat` times each; the cost is the run's time in
MLflow (its end minus its start) less its training time, so what remains is logging
(params, datasets, curves, reports, checkpoint, logged model) plus the test-set
evaluation, which is the same for both stores. Writes benchmarks/results/scale.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import env, rounds, save, show, spread, table, variant_rows

JOBS = 8
SWEEP = ["model=mlp", "optimizer=adam,sgd,rmsprop,adamw", "trainer.seed=1,2"]
VARIANTS = {
    "basic": ("basic launcher (1 job at a time)", ["trainer.threads=1"]),
    "joblib": (
        "joblib n_jobs=2",
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.threads=1"],
    ),
    "ray": (
        "Ray (the stack's head, 2 CPUs; 1 per job)",
        ["hydra/launcher=ray", "trainer.threads=1"],
    ),
}
RUN = ["model=mlp", "data.train_limit=2000", "data.test_limit=500", "trainer.epochs=1"]


def train(args: list[str], cwd: str, extra_env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "digit_experiments.train", *args]
    result = subprocess.run(
        command, cwd=cwd, env={**env(), **extra_env}, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{result.stderr[-3000:]}")
    return result


def sweep_seconds(name: str, round_: int, args, stack_env: dict, cwd: str) -> tuple[float, int]:
    from mlflow import MlflowClient

    experiment = f"scale-{name}-{round_}"
    started = time.perf_counter()
    train(
        [
            "-m",
            *SWEEP,
            *VARIANTS[name][1],
            f"data.train_limit={args.train_limit}",
            "data.test_limit=1000",
            f"trainer.epochs={args.epochs}",
            "trainer.early_stopping.enabled=false",
            f"tracking.experiment={experiment}",
        ],
        cwd,
        stack_env,
    )
    seconds = time.perf_counter() - started
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    finished = client.search_runs(
        [experiment_id], "attributes.status = 'FINISHED' and tags.hydra_job_num != ''"
    )
    return seconds, len(finished)


def tracking_cost(uri: str, cwd: str, extra_env: dict) -> float:
    """Seconds one run spends in MLflow beyond training."""
    from mlflow import MlflowClient

    experiment = f"cost-{time.time_ns()}"
    train([*RUN, f"tracking.uri={uri}", f"tracking.experiment={experiment}"], cwd, extra_env)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    wall = (run.info.end_time - run.info.start_time) / 1000
    return wall - run.data.metrics["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-limit", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the sweeps")
    parser.add_argument("--run-repeat", type=int, default=3, help="runs per store")
    args = parser.parse_args()

    from digit_experiments.stack import Stack

    with tempfile.TemporaryDirectory(prefix="scale-bench-", dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL runs as `postgres` when we are root
        stack = Stack(Path(tmp) / "stack")
        started = time.perf_counter()
        stack.up()
        up_seconds = time.perf_counter() - started
        try:
            stack_env = stack.env()
            seconds = {name: [] for name in VARIANTS}
            finished = {name: [] for name in VARIANTS}
            for i, name in rounds(list(VARIANTS), args.repeat):
                wall, done = sweep_seconds(name, i, args, stack_env, tmp)
                seconds[name].append(wall)
                finished[name].append(done)
                print(f"round {i + 1}: {VARIANTS[name][0]:45s} {wall:7.1f} s  {done}/{JOBS}")
            costs = {"server": [], "sqlite": []}
            for i, store in rounds(list(costs), args.run_repeat):
                uri = (
                    stack_env["MLFLOW_TRACKING_URI"]
                    if store == "server"
                    else f"sqlite:///{tmp}/cost.db"
                )
                costs[store].append(tracking_cost(uri, tmp, stack_env))
                print(f"run {i + 1}: tracking cost, {store}: {costs[store][-1]:.2f} s")
        finally:
            started = time.perf_counter()
            stack.down()
            down_seconds = time.perf_counter() - started

    rows = variant_rows({name: label for name, (label, _) in VARIANTS.items()}, seconds, finished)
    cost_rows = {store: spread(values, 2) for store, values in costs.items()}
    setup = (
        f"`benchmarks/scale.py --train-limit {args.train_limit} --epochs {args.epochs} "
        f"--repeat {args.repeat} --run-repeat {args.run_repeat}`: {JOBS} jobs (mlp x adam, "
        f"sgd, rmsprop, adamw x 2 seeds), {args.train_limit} training images, {args.epochs} "
        "epochs each, 1 TensorFlow thread per job, against the stack's mlflow server on "
        f"PostgreSQL; variants alternated over {args.repeat} rounds. `digits stack up` "
        f"took {up_seconds:.0f} s, `down` {down_seconds:.0f} s."
    )
    markdown = table(
        ["variant", "wall seconds (min / median / max)", "speed-up vs basic", "jobs finished"],
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
    markdown += "\n\n" + table(
        ["store", "one run's time in MLflow beyond training, s (min / median / max)"],
        [
            ["mlflow server on PostgreSQL (HTTP)", show(cost_rows["server"], "{:.2f}")],
            ["embedded SQLite (sqlite:///)", show(cost_rows["sqlite"], "{:.2f}")],
        ],
    )
    save(
        "scale",
        setup,
        {
            "repeat": args.repeat,
            "run_repeat": args.run_repeat,
            "train_limit": args.train_limit,
            "epochs": args.epochs,
            "stack_up_seconds": round(up_seconds, 1),
            "stack_down_seconds": round(down_seconds, 1),
            "rows": rows,
            "tracking_cost_seconds": cost_rows,
        },
        markdown,
    )


if __name__ == "__main__":
    main()
