"""Peak memory (maximum resident set size) of a full tracked run, as a whole process.

    .venv/bin/python benchmarks/memory.py [--repeat 1] [OVERRIDES...]   # default: the seed CNN

Runs `python -m digit_experiments.train OVERRIDES` in a temporary directory with its own
SQLite store (a full run: all 60,000 training images, 15 epochs with early stopping,
everything logged) and reads that process's peak RSS from the kernel; `--repeat` runs
it again, each time into a new store, and shows min / median / max. Also records each
run's test accuracy and training time. Writes benchmarks/results/memory.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from common import env, save, show, spread, store_runs, table


def peak_rss_run(command: list[str], cwd: str) -> tuple[float, float]:
    """Run a command to completion: (wall seconds, its peak RSS in MiB). Exits on failure."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=err
        )
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the largest of
        # every child so far, so a second repeat could not come out smaller.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            sys.exit(f"failed: {' '.join(command)}\n{err.read().decode(errors='replace')[-3000:]}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def one_run(overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        command = [sys.executable, "-m", "digit_experiments.train", *overrides]
        seconds, peak_mib = peak_rss_run(command, tmp)
        (run,) = store_runs(tmp)
    metrics = run.data.metrics
    return {
        "peak_rss_mib": round(peak_mib),
        "wall_seconds": round(seconds, 1),
        "train_seconds": round(metrics["train_seconds"], 1),
        "epochs": int(metrics["epochs_trained"]),
        "test_accuracy": metrics["test_accuracy"],
        "run_name": run.info.run_name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs, one after another")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args()
    runs = []
    for i in range(args.repeat):
        runs.append(one_run(args.overrides))
        print(f"{i + 1}: {runs[-1]}", flush=True)
    result = {
        "overrides": args.overrides,
        "repeat": args.repeat,
        "runs": runs,
        "peak_rss_mib": spread([r["peak_rss_mib"] for r in runs], 0),
    }
    setup = (
        f"`benchmarks/memory.py --repeat {args.repeat} {' '.join(args.overrides)}`: "
        f"{args.repeat} full tracked run(s) ({runs[0]['run_name']}), each a whole process "
        "with its own store; peak resident memory from the kernel."
    )
    rows = [
        [
            r["run_name"],
            f"{r['peak_rss_mib']:,} MiB",
            r["epochs"],
            f"{r['test_accuracy']:.4f}",
            r["train_seconds"],
            r["wall_seconds"],
        ]
        for r in runs
    ]
    markdown = (
        f"Peak RSS (min / median / max): {show(result['peak_rss_mib'], '{:,.0f}', ' MiB')}\n\n"
        + table(["run", "peak RSS", "epochs", "test accuracy", "train s", "wall s"], rows)
    )
    save("memory", setup, result, markdown)


if __name__ == "__main__":
    main()
