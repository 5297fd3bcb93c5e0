"""Time to 99.0% test accuracy for the seed CNN with the default settings.

    .venv/bin/python benchmarks/time_to_99.py [--target 0.99] [--max-epochs 15] [--repeat 3]
                                              [OVERRIDES...]

Trains as `python -m digit_experiments.train` does (all 54,000 training images, batch 32,
Adam, the seed's dropout, compiled as a run compiles it), evaluates the test set after
every epoch (not counted in the training time) and stops at the first epoch at or above
the target. Each repeat is a fresh process, one after another; every repeat is recorded
(its epochs, and the epoch and training seconds at which it reached the target), and
the summary shows min / median / max over the repeats that reached it.
Writes benchmarks/results/time_to_99.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import ROOT, last_json_line, prepare, save, show, spread, table, timed


def worker(target: float, max_epochs: int, overrides: list[str]) -> None:
    """One training until the target; print its epochs and where it got there, as JSON."""
    import keras
    import numpy as np

    from digit_experiments.core import pipeline

    conf, splits, model = prepare(overrides)
    one_hot = np.eye(splits.num_classes, dtype=np.float32)
    epochs, reached = [], None

    class TestEachEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            nonlocal reached
            seconds = time.perf_counter() - self.started
            _, accuracy = self.model.evaluate(splits.x_test, one_hot[splits.y_test], verbose=0)
            total = seconds + (epochs[-1]["train_seconds"] if epochs else 0.0)
            epochs.append({"epoch": epoch + 1, "test_accuracy": accuracy, "train_seconds": total})
            print(f"epoch {epoch + 1}: test accuracy {accuracy:.4f}, {total:.1f} s", flush=True)
            if accuracy >= target:
                reached = epochs[-1]
                self.model.stop_training = True

    model.fit(
        **pipeline.fit_inputs(splits, one_hot, conf.trainer, conf.regularization.augment),
        epochs=max_epochs,
        callbacks=[TestEachEpoch()],
        verbose=0,
    )
    described = (
        f"{conf.model.name}, {conf.optimizer.name}, {conf.regularization.name}, "
        f"batch {conf.trainer.batch_size}, {len(splits.y_train):,} training images"
    )
    print(json.dumps({"reached": reached, "epochs": epochs, "described": described}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: the seed CNN)")
    args = parser.parse_args()
    command = [
        sys.executable,
        __file__,
        "--worker",
        json.dumps([args.target, args.max_epochs, args.overrides]),
    ]
    repeats = []
    for i in range(args.repeat):
        repeats.append(last_json_line(timed(command, cwd=ROOT)[1]))
        reached = repeats[-1]["reached"]
        print(f"repeat {i + 1}: reached {reached}", flush=True)
    hits = [r["reached"] for r in repeats if r["reached"]]
    result = {
        "target": args.target,
        "repeat": args.repeat,
        "overrides": args.overrides,
        "repeats": [{"reached": r["reached"], "epochs": r["epochs"]} for r in repeats],
        "reached_count": len(hits),
        "epoch": spread([h["epoch"] for h in hits], 0) if hits else None,
        "train_seconds": spread([h["train_seconds"] for h in hits], 1) if hits else None,
    }
    summary = (
        f"Reached {args.target:.1%} in {len(hits)} of {args.repeat} repeats: after epoch "
        f"{show(result['epoch'], '{:.0f}')} (min / median / max), "
        f"{show(result['train_seconds'], '{:.0f}')} s of training."
        if hits
        else f"Did not reach {args.target:.1%} in {args.max_epochs} epochs in any repeat."
    )
    rows = [
        [i + 1, e["epoch"], f"{e['test_accuracy']:.4f}", f"{e['train_seconds']:.1f}"]
        for i, r in enumerate(repeats)
        for e in r["epochs"]
    ]
    setup = (
        f"`benchmarks/time_to_99.py --repeat {args.repeat} {' '.join(args.overrides)}`"
        f": {repeats[0]['described']}, test set evaluated after each epoch; training "
        f"seconds exclude those evaluations. Target {args.target:.1%}; {args.repeat} "
        "repeats, each a fresh process."
    )
    save(
        "time_to_99",
        setup,
        result,
        summary + "\n\n" + table(["repeat", "epoch", "test accuracy", "training seconds"], rows),
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(*json.loads(sys.argv[2]))
    else:
        main()
