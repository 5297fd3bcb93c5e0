"""The seed CNN trained by a plain Keras script: no Hydra, no MLflow. The reference that
benchmarks/overhead.py compares a fully tracked run with.

    .venv/bin/python benchmarks/plain_keras.py [--epochs 3] [--train-limit N --test-limit N]

Same data (the bundled MNIST, same split, or the same class-balanced slices), input
pipeline (`pipeline.fit_inputs`: the default tf.data, cached, reshuffled each epoch,
prefetched), model, optimizer, loss, batch size, epochs and seed as
`python -m digit_experiments.train` with the defaults.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from digit_experiments.core import data, pipeline
from digit_experiments.core.config import DataConfig, RegularizationConfig, TrainerConfig
from digit_experiments.core.models.cnn import CNN

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--train-limit", type=int, help="a class-balanced slice (default: all)")
parser.add_argument("--test-limit", type=int, help="a class-balanced slice (default: all)")
args = parser.parse_args()

keras.utils.set_random_seed(args.seed)
splits = data.load(DataConfig(train_limit=args.train_limit, test_limit=args.test_limit), args.seed)
# The seed's dropout (conf/regularization/cnn_default.yaml -> dropout.yaml).
model = CNN(name="cnn").build(
    splits.image_shape, data.DIGITS, RegularizationConfig(conv_dropout=0.25, dense_dropout=0.5)
)
model.compile(
    optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"]
)
one_hot = np.eye(data.DIGITS, dtype=np.float32)
started = time.perf_counter()
# The batches come as a run's do (the default tf.data pipeline), so both train alike.
trainer = TrainerConfig(batch_size=args.batch_size, seed=args.seed)
model.fit(**pipeline.fit_inputs(splits, one_hot, trainer), epochs=args.epochs, verbose=2)
loss, accuracy = model.evaluate(splits.x_test, one_hot[splits.y_test], verbose=0)
print(f"test accuracy {accuracy:.4f}; fit {time.perf_counter() - started:.1f} s")
