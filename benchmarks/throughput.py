"""Training throughput: images per second and seconds per epoch for mlp, cnn and vgg,
and for the input pipeline and TensorFlow options (trainer.pipeline, trainer.jit_compile,
trainer.threads, batch size).

    .venv/bin/python benchmarks/throughput.py [--images 12000] [--epochs 3] [--repeat 2]

Each variant trains in its own process (thread settings only take before TensorFlow
starts) on a class-balanced slice of the bundled MNIST; the figure is the median of the
epochs after the first (which includes tracing and compilation). Validation is on the
usual 10% split, as in a real run. Writes benchmarks/results/throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from common import ROOT, prepare, save, table, timed

# (label, model, overrides): the default of each model first, then the options, tried on
# the seed CNN (the default model) and on the MLP and VGG where they may differ.
VARIANTS = [
    ("mlp", "mlp", []),
    ("mlp, NumPy arrays", "mlp", ["trainer.pipeline=arrays"]),
    ("cnn", "cnn", []),
    ("cnn, NumPy arrays", "cnn", ["trainer.pipeline=arrays"]),
    # XLA on CPU: several times slower here (vgg: 326 s per epoch against 100 s), so it
    # is measured on the CNN only.
    ("cnn, XLA", "cnn", ["trainer.jit_compile=true"]),
    ("cnn, 1 thread", "cnn", ["trainer.threads=1"]),
    ("cnn, batch 128", "cnn", ["trainer.batch_size=128"]),
    ("vgg", "vgg", []),
    ("vgg, NumPy arrays", "vgg", ["trainer.pipeline=arrays"]),
]


def worker(overrides: list[str]) -> None:
    """Train as a run does (same model, optimizer, loss, pipeline), without tracking;
    print the per-epoch seconds as JSON."""
    import keras
    import numpy as np

    from digit_experiments import data, pipeline

    conf, splits, model = prepare(overrides)
    seconds = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    one_hot = np.eye(data.NUM_CLASSES, dtype=np.float32)
    model.fit(
        **pipeline.fit_inputs(splits, one_hot, conf.trainer),
        epochs=conf.trainer.epochs,
        callbacks=[Clock()],
        verbose=0,
    )
    print(json.dumps({"epoch_seconds": seconds, "train_images": len(splits.y_train)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12000, help="training + validation")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="rounds: processes per variant")
    parser.add_argument("--only", help="variant labels separated by ';' (e.g. 'cnn;cnn, XLA')")
    args = parser.parse_args()
    only = args.only.split(";") if args.only else [v[0] for v in VARIANTS]
    unknown = sorted(set(only) - {v[0] for v in VARIANTS})
    if unknown:
        parser.error(f"--only: no variant {unknown}; the variants: {[v[0] for v in VARIANTS]}")
    chosen = [v for v in VARIANTS if v[0] in only]
    rows, data = [], []
    runs = {
        label: [
            f"model={model}",
            f"data.train_limit={args.images}",
            f"trainer.epochs={args.epochs}",
            *extra,
        ]
        for label, model, extra in chosen
    }
    # Each process: the median of its epochs after the first (tracing). The variants take
    # turns, round after round, so that this machine's drift (tens of percent over
    # minutes) falls on all of them alike; the figure is the median over the rounds.
    epoch_times: dict[str, list[float]] = {label: [] for label in runs}
    images: dict[str, int] = {}
    for _ in range(args.repeat):
        for label, overrides in runs.items():
            command = [sys.executable, __file__, "--worker", json.dumps(overrides)]
            _, out = timed(command, cwd=ROOT)
            result = json.loads(out.strip().splitlines()[-1])
            seconds = result["epoch_seconds"]
            epoch_times[label].append(statistics.median(seconds[1:] or seconds))
            images[label] = result["train_images"]
    for label, overrides in runs.items():
        epoch_s = statistics.median(epoch_times[label])
        per_s = images[label] / epoch_s
        full_epoch = 54000 / per_s
        data.append(
            {
                "variant": label,
                "overrides": overrides,
                "epoch_medians": [round(t, 2) for t in epoch_times[label]],
                "train_images": images[label],
                "images_per_second": round(per_s),
                "full_epoch_seconds": full_epoch,
            }
        )
        rows.append([label, f"{per_s:,.0f}", f"{full_epoch:.1f}"])
        print(
            f"{label:20s} {per_s:8.0f} images/s  {full_epoch:6.1f} s per 54,000-image epoch",
            flush=True,
        )
    setup = (
        f"`benchmarks/throughput.py --images {args.images} --epochs {args.epochs} --repeat "
        f"{args.repeat}`: training images per second (median of the epochs after the "
        f"first, validation included, median of {args.repeat} processes) and the seconds "
        "that makes for one epoch of the full 54,000-image training split. Defaults: tf.data "
        "pipeline, no XLA, all cores, batch 32."
    )
    markdown = table(["variant", "images/s", "s per full epoch"], rows)
    save("throughput", setup, {"rows": data}, markdown)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        main()
