"""Stalls between epochs: the seconds of every epoch of `experiment=best_cnn`, for each
way the batches reach `fit`.

    .venv/bin/python benchmarks/stalls.py [--images 12800] [--epochs 8] [--repeat 3]

With tf.data's autotuning on, some epochs start seconds late: `fit` drops the last
epoch's iterator there, and its destructor waits for the autotuning thread. A median of
epochs hides that (most epochs do not stall), so this records every epoch, and per
process the mean of the epochs after the first (tracing), the fastest, and how many
stalled (over 1.3 x the fastest). The variants:
- `dataset`: trainer.pipeline=dataset as it is, without autotuning;
- `dataset, autotuned`: the same tf.data pipeline with autotuning switched back on (as
  it was before);
- `arrays`: trainer.pipeline=arrays, Keras' own tf.data pipeline for NumPy arrays, which
  autotunes.
Each variant trains in its own process, on a class-balanced slice of the bundled MNIST
(its usual validation split included), the variants alternated round by round.
Writes benchmarks/results/stalls.{json,md}.
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

STALL = 1.3  # an epoch over 1.3 x its process's fastest one stalled
VARIANTS = {
    "dataset": ["trainer.pipeline=dataset"],
    "dataset, autotuned": ["trainer.pipeline=dataset"],
    "arrays": ["trainer.pipeline=arrays"],
}


def worker(variant: str, overrides: list[str]) -> None:
    """Train as a run does (model, compile, pipeline), without tracking; print every
    epoch's seconds as JSON."""
    import numpy as np
    import tensorflow as tf

    from digit_experiments.core import pipeline

    conf, splits, model = prepare(overrides)
    inputs = pipeline.fit_inputs(splits, np.eye(splits.num_classes, dtype=np.float32), conf.trainer)
    if variant == "dataset, autotuned":
        options = tf.data.Options()
        options.autotune.enabled = True
        inputs["x"] = inputs["x"].with_options(options)
        inputs["validation_data"] = inputs["validation_data"].with_options(options)
    seconds: list[float] = []
    model.fit(**inputs, epochs=conf.trainer.epochs, callbacks=[epoch_clock(seconds)], verbose=0)
    print(json.dumps({"epoch_seconds": seconds, "train_images": len(splits.y_train)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12800, help="training + validation")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="rounds: processes per variant")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs: at least 3 (the first traces, and a stall needs two more)")
    common = [
        "experiment=best_cnn",
        # The model's own augmentation layers, as the recorded figures had them: `arrays`
        # cannot take the preset's single transform (made in tf.data).
        "regularization.augment.single_transform=false",
        f"data.train_limit={args.images}",
        f"trainer.epochs={args.epochs}",
    ]
    processes: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for i, name in rounds(list(VARIANTS), args.repeat):
        overrides = json.dumps(common + VARIANTS[name])
        command = [sys.executable, __file__, "--worker", name, overrides]
        result = last_json_line(timed(command, cwd=ROOT)[1])
        after_first = result["epoch_seconds"][1:]
        fastest = min(after_first)
        process = {
            "epoch_seconds": [round(s, 2) for s in result["epoch_seconds"]],
            "mean": statistics.mean(after_first),
            "fastest": fastest,
            "stalled": sum(s > STALL * fastest for s in after_first),
            "train_images": result["train_images"],
        }
        processes[name].append(process)
        print(
            f"round {i + 1}: {name:20s} mean {process['mean']:5.2f} s, fastest "
            f"{fastest:5.2f} s, {process['stalled']} of {len(after_first)} stalled",
            flush=True,
        )
    data, rows = [], []
    for name, done in processes.items():
        row = {
            "variant": name,
            "overrides": common + VARIANTS[name],
            "train_images": done[0]["train_images"],
            "mean_epoch_seconds": spread([p["mean"] for p in done], 2),
            "fastest_epoch_seconds": spread([p["fastest"] for p in done], 2),
            "stalled_epochs": sum(p["stalled"] for p in done),
            "epochs": sum(len(p["epoch_seconds"]) - 1 for p in done),
            "processes": done,
        }
        data.append(row)
        rows.append(
            [
                name,
                show(row["mean_epoch_seconds"], "{:.2f}"),
                show(row["fastest_epoch_seconds"], "{:.2f}"),
                f"{row['stalled_epochs']} of {row['epochs']}",
            ]
        )
    setup = (
        f"`benchmarks/stalls.py --images {args.images} --epochs {args.epochs} --repeat "
        f"{args.repeat}`: `experiment=best_cnn` on {data[0]['train_images']:,} training "
        f"images, seconds per epoch (validation included) after the first; per process the "
        f"mean and the fastest epoch, min / median / max over {args.repeat} processes (the "
        f"variants alternated round by round); an epoch over {STALL} x its process's fastest "
        "stalled."
    )
    markdown = table(["pipeline", "mean s per epoch", "fastest epoch, s", "epochs stalled"], rows)
    save("stalls", setup, {"repeat": args.repeat, "stall_factor": STALL, "rows": data}, markdown)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
