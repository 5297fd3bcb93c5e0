"""Peak memory (maximum resident set size) of a full tracked run, as a whole process.

    .venv/bin/python benchmarks/memory.py [OVERRIDES...]     # default: the seed CNN

Runs `python -m digit_experiments.train OVERRIDES` in a temporary directory with its own
SQLite store (a full run: all 60,000 training images, 15 epochs with early stopping,
everything logged) and reads the child's peak RSS from the kernel. Also prints the run's
test accuracy and training time. Writes benchmarks/results/memory.{json,md}.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile

from common import save, table, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        command = [sys.executable, "-m", "digit_experiments.train", *args.overrides]
        seconds, _ = timed(command, cwd=tmp)
        # ru_maxrss of the children waited for: the training process (KiB on Linux).
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        experiment = client.get_experiment_by_name("digit-experiments")
        (run,) = client.search_runs([experiment.experiment_id])
        metrics = run.data.metrics
    result = {
        "overrides": args.overrides,
        "peak_rss_mib": round(peak_mib),
        "wall_seconds": round(seconds, 1),
        "train_seconds": round(metrics["train_seconds"], 1),
        "epochs": int(metrics["epochs_trained"]),
        "test_accuracy": metrics["test_accuracy"],
        "run_name": run.info.run_name,
    }
    setup = (
        f"`benchmarks/memory.py {' '.join(args.overrides)}`: one full tracked run "
        f"({run.info.run_name}) as a whole process; peak resident memory from the kernel."
    )
    rows = [
        [
            run.info.run_name,
            f"{peak_mib:,.0f} MiB",
            result["epochs"],
            f"{result['test_accuracy']:.4f}",
            result["train_seconds"],
            result["wall_seconds"],
        ]
    ]
    save(
        "memory",
        setup,
        result,
        table(["run", "peak RSS", "epochs", "test accuracy", "train s", "wall s"], rows),
    )


if __name__ == "__main__":
    main()
