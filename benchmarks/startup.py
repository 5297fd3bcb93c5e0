"""Start-up: how long `python -m digit_experiments.train --help` and `--cfg job` take as
whole processes, and whether they import TensorFlow or MLflow (they must not).

    .venv/bin/python benchmarks/startup.py [--repeat 7]

Prints a table and writes benchmarks/results/startup.{json,md}. Target: under 1 s each.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import ROOT, env, save, table

COMMANDS = {"--help": ["--help"], "--cfg job": ["--cfg", "job"]}
HEAVY = ("tensorflow", "mlflow", "keras")


def measure(args: list[str], repeat: int) -> dict:
    command = [sys.executable, "-m", "digit_experiments.train", *args]
    subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, check=True)  # warm caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", *command[1:]],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    imported = sorted(
        {
            line.split("|")[-1].strip().split(".")[0]
            for line in traced.stderr.splitlines()
            if "|" in line
        }
    )
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "heavy_imports": [m for m in imported if m in HEAVY],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rows = {name: measure(argv, args.repeat) for name, argv in COMMANDS.items()}
    markdown = table(
        ["command", "median s", "min s", "TensorFlow/MLflow imported"],
        [
            [
                f"`python -m digit_experiments.train {name}`",
                r["median_s"],
                r["min_s"],
                ", ".join(r["heavy_imports"]) or "no",
            ]
            for name, r in rows.items()
        ],
    )
    setup = (
        f"`benchmarks/startup.py --repeat {args.repeat}`: whole processes, after one "
        "warm-up run (file caches warm). Target: under 1 s."
    )
    save("startup", setup, {"rows": rows}, markdown)


if __name__ == "__main__":
    main()
