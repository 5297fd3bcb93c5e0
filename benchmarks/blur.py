"""Blur from augmentation: how sharp the training pictures are that a network sees, with
rotation, shift and zoom as Keras' three layers (three bilinear resamplings) and as one
affine transform (`regularization.augment.single_transform`, one resampling).

    .venv/bin/python benchmarks/blur.py [--images 2000] [--seed 0]

On a class-balanced slice of the bundled MNIST training pictures, with the ranges of
`experiment=best_cnn` (rotation, shift and zoom from its config): the edge energy (the
sum of squared steps between neighbouring pixels, per picture: what blur takes away),
the ink (sum of pixel values, per picture) and the nearly saturated pixels (> 0.9, per
picture), clean and after each way. Seeded: the same figures on every run.
Writes benchmarks/results/blur.{json,md}.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import prepare, save, table

SATURATED = 0.9


def measures(images: np.ndarray) -> dict:
    a = np.asarray(images, dtype=np.float64)[..., 0]
    edges = (np.diff(a, axis=1) ** 2).sum(axis=(1, 2)) + (np.diff(a, axis=2) ** 2).sum(axis=(1, 2))
    return {
        "edge_energy": round(float(edges.mean()), 2),
        "ink": round(float(a.sum(axis=(1, 2)).mean()), 2),
        "saturated_pixels": round(float((a > SATURATED).sum(axis=(1, 2)).mean()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    conf, splits, _ = prepare(["experiment=best_cnn", f"data.train_limit={args.images}"])
    import keras
    import tensorflow as tf

    from digit_experiments.core import distort

    aug = conf.regularization.augment
    images = splits.x_train
    keras.utils.set_random_seed(args.seed)
    three = images
    for layer in (
        keras.layers.RandomRotation(aug.rotation / 360.0, fill_mode="constant"),
        keras.layers.RandomTranslation(aug.shift, aug.shift, fill_mode="constant"),
        keras.layers.RandomZoom(aug.zoom, fill_mode="constant"),
    ):
        three = layer(three, training=True)
    one = distort.transform(
        tf.constant(images), rotation=aug.rotation, shift=aug.shift, zoom=aug.zoom, seed=args.seed
    )
    clean = measures(images)
    rows = []
    for name, moved in (("clean", images), ("three Keras layers", three), ("one transform", one)):
        m = measures(moved)
        m["edge_fraction"] = round(m["edge_energy"] / clean["edge_energy"], 3)
        rows.append({"way": name, **m})
    setup = (
        f"`benchmarks/blur.py`: {len(images):,} training pictures (class-balanced, seed "
        f"{args.seed}), `experiment=best_cnn`'s ranges (rotation {aug.rotation} degrees, shift "
        f"{aug.shift}, zoom {aug.zoom}); per picture, the mean."
    )
    markdown = table(
        ["way", "edge energy", "of the clean", "ink", f"pixels > {SATURATED}"],
        [
            [
                r["way"],
                r["edge_energy"],
                f"{r['edge_fraction']:.0%}",
                r["ink"],
                r["saturated_pixels"],
            ]
            for r in rows
        ],
    )
    save("blur", setup, {"images": len(images), "seed": args.seed, "rows": rows}, markdown)


if __name__ == "__main__":
    main()
