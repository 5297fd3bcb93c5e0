"""How the training and validation batches reach `model.fit` (trainer.pipeline)."""

from __future__ import annotations

import numpy as np

from digit_experiments.core.config import AugmentConfig, TrainerConfig
from digit_experiments.core.data import Splits


def fit_inputs(
    splits: Splits,
    one_hot: np.ndarray,
    trainer: TrainerConfig,
    augment: AugmentConfig | None = None,
) -> dict:
    """Keyword arguments for model.fit: the training data and the validation data.

    `arrays`: the NumPy arrays as they are; Keras batches and shuffles them itself.
    `dataset`: a tf.data pipeline, cached in memory, reshuffled every epoch (seeded)
    and prefetched so the next batch is ready while the current one trains, without
    tf.data's autotuning (it stalls epochs, see below); with
    `augment`'s elastic distortions or single transform on, each training batch is
    moved afresh (core/distort.py).
    """
    y_train, y_val = one_hot[splits.y_train], one_hot[splits.y_val]
    if trainer.pipeline == "arrays":
        return {
            "x": splits.x_train,
            "y": y_train,
            "batch_size": trainer.batch_size,
            "validation_data": (splits.x_val, y_val),
        }
    import tensorflow as tf

    train = (
        tf.data.Dataset.from_tensor_slices((splits.x_train, y_train))
        .cache()
        .shuffle(len(y_train), seed=trainer.seed, reshuffle_each_iteration=True)
        .batch(trainer.batch_size)
    )
    if augment is not None and (augment.distorts or augment.in_pipeline):
        from digit_experiments.core.distort import transform

        moves = {"alpha": augment.elastic, "sigma": augment.elastic_sigma}
        if augment.in_pipeline:
            moves.update(rotation=augment.rotation, shift=augment.shift, zoom=augment.zoom)
        train = train.map(
            lambda x, y: (transform(x, **moves), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    val = (
        tf.data.Dataset.from_tensor_slices((splits.x_val, y_val)).batch(trainer.batch_size).cache()
    )
    # One batch ahead, sized by hand: tf.data's autotuning thread made a third of the
    # epochs here stall at their start, while fit dropped the last epoch's iterator
    # (its destructor waits for that thread), by 17 s on 24 s epochs of best_cnn; the
    # Keras pipeline for NumPy arrays (`arrays`) autotunes and stalls the same way.
    # benchmarks/README.md, "Stalls between epochs".
    options = tf.data.Options()
    options.autotune.enabled = False
    train, val = (d.prefetch(1).with_options(options) for d in (train, val))
    # The dataset shuffles itself; fit's own shuffle (on by default) only warns for one.
    return {"x": train, "validation_data": val, "shuffle": False}
