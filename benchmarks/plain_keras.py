"""The seed CNN trained by a plain Keras script: no Hydra, no MLflow. The reference that
benchmarks/overhead.py compares a fully tracked run with.

Same data (the bundled MNIST, same split), input pipeline (tf.data: cached, reshuffled
each epoch, prefetched), model, batch size, epochs and seed as
`python -m digit_experiments.train` with the defaults.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from digit_experiments import data
from digit_experiments.config import CNNConfig, DataConfig, RegularizationConfig
from digit_experiments.models import build_cnn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--seed", type=int, default=42)
args = parser.parse_args()

keras.utils.set_random_seed(args.seed)
splits = data.load(DataConfig(), args.seed)
model = build_cnn(CNNConfig(), RegularizationConfig(conv_dropout=0.25, dense_dropout=0.5))
model.compile(
    optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"]
)
one_hot = np.eye(10, dtype=np.float32)
train = (
    tf.data.Dataset.from_tensor_slices((splits.x_train, one_hot[splits.y_train]))
    .cache()
    .shuffle(len(splits.y_train), seed=args.seed, reshuffle_each_iteration=True)
    .batch(args.batch_size)
    .prefetch(tf.data.AUTOTUNE)
)
val = (
    tf.data.Dataset.from_tensor_slices((splits.x_val, one_hot[splits.y_val]))
    .batch(args.batch_size)
    .cache()
    .prefetch(tf.data.AUTOTUNE)
)
started = time.perf_counter()
model.fit(train, epochs=args.epochs, validation_data=val, shuffle=False, verbose=2)
loss, accuracy = model.evaluate(splits.x_test, one_hot[splits.y_test], verbose=0)
print(f"test accuracy {accuracy:.4f}; fit {time.perf_counter() - started:.1f} s")
