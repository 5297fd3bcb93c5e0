"""The seed CNN trained by a plain Keras script: no Hydra, no MLflow. The reference that
benchmarks/overhead.py compares a fully tracked run with.

Same data (the bundled MNIST, same split), input pipeline (`pipeline.fit_inputs`: the
default tf.data, cached, reshuffled each epoch, prefetched), model, batch size, epochs
and seed as `python -m digit_experiments.train` with the defaults.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from digit_experiments import data, pipeline
from digit_experiments.config import CNNConfig, DataConfig, RegularizationConfig, TrainerConfig
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
started = time.perf_counter()
# The batches come as a run's do (the default tf.data pipeline), so both train alike.
trainer = TrainerConfig(batch_size=args.batch_size, seed=args.seed)
model.fit(**pipeline.fit_inputs(splits, one_hot, trainer), epochs=args.epochs, verbose=2)
loss, accuracy = model.evaluate(splits.x_test, one_hot[splits.y_test], verbose=0)
print(f"test accuracy {accuracy:.4f}; fit {time.perf_counter() - started:.1f} s")
