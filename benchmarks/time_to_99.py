"""Time to 99.0% test accuracy for the seed CNN with the default settings.

    .venv/bin/python benchmarks/time_to_99.py [--target 0.99] [--max-epochs 15]

Trains as `python -m digit_experiments.train` does (all 54,000 training images, batch 32,
Adam, the seed's dropout), evaluates the test set after every epoch (not counted in the
training time) and stops at the first epoch at or above the target.
Writes benchmarks/results/time_to_99.{json,md}.
"""

from __future__ import annotations

import argparse
import time

from common import prepare, save, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: the seed CNN)")
    args = parser.parse_args()

    import keras
    import numpy as np

    from digit_experiments import pipeline

    conf, splits, model = prepare(list(args.overrides))
    one_hot = np.eye(10, dtype=np.float32)
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
            if accuracy >= args.target:
                reached = epochs[-1]
                self.model.stop_training = True

    model.fit(
        **pipeline.fit_inputs(splits, one_hot, conf.trainer),
        epochs=args.max_epochs,
        callbacks=[TestEachEpoch()],
        verbose=0,
    )
    setup = (
        f"`benchmarks/time_to_99.py {' '.join(args.overrides)}`: the seed CNN "
        f"({conf.model.name}, {conf.optimizer.name}, {conf.regularization.name}, batch "
        f"{conf.trainer.batch_size}) on 54,000 training images, test set evaluated after "
        f"each epoch; training seconds exclude those evaluations. Target {args.target:.1%}."
    )
    rows = [[e["epoch"], f"{e['test_accuracy']:.4f}", f"{e['train_seconds']:.1f}"] for e in epochs]
    summary = (
        f"Reached {reached['test_accuracy']:.2%} after epoch {reached['epoch']}, "
        f"{reached['train_seconds']:.0f} s of training."
        if reached
        else f"Did not reach {args.target:.1%} in {args.max_epochs} epochs."
    )
    save(
        "time_to_99",
        setup,
        {"target": args.target, "reached": reached, "epochs": epochs},
        summary + "\n\n" + table(["epoch", "test accuracy", "training seconds"], rows),
    )


if __name__ == "__main__":
    main()
