"""Training throughput: images per second and seconds per epoch for mlp, cnn and vgg,
and for the input pipeline and TensorFlow options (trainer.pipeline, trainer.jit_compile,
trainer.threads, batch size).

    .venv/bin/python benchmarks/throughput.py [--images 12000] [--epochs 3] [--repeat 2]

Each variant trains in its own process (thread settings only take before TensorFlow
starts) on a class-balanced slice of the bundled MNIST, compiled as a run compiles it;
a process's figure is the median of its epochs after the first (which includes tracing
and compilation). Validation is on the usual 10% split, as in a real run. The variants
take turns, round after round (`--repeat` rounds, each starting with the next variant);
every process is recorded, and the table shows min / median / max over them.
Writes benchmarks/results/throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from common import (
    ROOT,
    epoch_clock,
    last_json_line,
    prepare,
    rounds,
    save,
    show,
    spread,
    table,
    timed,
)

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
    """Train as a run does (same model, compile, pipeline), without tracking; print the
    per-epoch seconds as JSON."""
    import numpy as np

    from digit_experiments.core import pipeline

    conf, splits, model = prepare(overrides)
    seconds: list[float] = []
    one_hot = np.eye(splits.num_classes, dtype=np.float32)
    model.fit(
        **pipeline.fit_inputs(splits, one_hot, conf.trainer, conf.regularization.augment),
        epochs=conf.trainer.epochs,
        callbacks=[epoch_clock(seconds)],
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
    runs = {
        label: [
            f"model={model}",
            f"data.train_limit={args.images}",
            f"trainer.epochs={args.epochs}",
            *extra,
        ]
        for label, model, extra in VARIANTS
        if label in only
    }
    # One figure per process: the median of its epochs after the first (tracing).
    epoch_times: dict[str, list[float]] = {label: [] for label in runs}
    images: dict[str, int] = {}
    for i, label in rounds(list(runs), args.repeat):
        command = [sys.executable, __file__, "--worker", json.dumps(runs[label])]
        result = last_json_line(timed(command, cwd=ROOT)[1])
        seconds = result["epoch_seconds"]
        epoch_times[label].append(statistics.median(seconds[1:] or seconds))
        images[label] = result["train_images"]
        print(f"round {i + 1}: {label:20s} {epoch_times[label][-1]:6.2f} s per epoch", flush=True)
    data, rows = [], []
    for label, overrides in runs.items():
        per_s = [images[label] / t for t in epoch_times[label]]
        row = {
            "variant": label,
            "overrides": overrides,
            "train_images": images[label],
            "epoch_seconds": spread(epoch_times[label]),
            "images_per_second": spread(per_s, 0),
            # What that makes for one epoch of the full 54,000-image training split.
            "full_epoch_seconds": spread([54000 / r for r in per_s], 1),
        }
        data.append(row)
        rows.append(
            [label, show(row["images_per_second"], "{:,.0f}"), show(row["full_epoch_seconds"])]
        )
    setup = (
        f"`benchmarks/throughput.py --images {args.images} --epochs {args.epochs} --repeat "
        f"{args.repeat}`: training images per second (per process: the median of the epochs "
        f"after the first, validation included; min / median / max of {args.repeat} "
        "processes, the variants alternated round by round) and the seconds that makes for "
        "one epoch of the full 54,000-image training split. Defaults: tf.data pipeline, no "
        "XLA, all cores, batch 32."
    )
    markdown = table(
        ["variant", "images/s (min / median / max)", "s per full epoch (min / median / max)"],
        rows,
    )
    save("throughput", setup, {"repeat": args.repeat, "rows": data}, markdown)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        main()
