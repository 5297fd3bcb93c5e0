"""Batch-normalisation statistics recomputed on clean training pictures
(`trainer.recalibrate_bn`).

A BatchNormalization layer keeps moving averages of its inputs' mean and variance while
training, and normalises with them at inference. For the network that is validated,
checkpointed and shipped they can be the wrong ones:
- with `trainer.ema` that network holds an average of past weights, while the moving
  statistics follow the current weights (two epochs into best_cnn, the averaged weights
  with those statistics got 27% of the test set right, and 96% with their own);
- they were gathered on augmented pictures with dropout on, and the test set is neither.

`recalibrate` sets each layer's statistics to the mean and variance of its inputs over
clean training pictures, the network in inference mode, one layer after the other, so
each layer sees the statistics already recomputed before it (as PyTorch's SWA
`update_bn` does, in one pass per layer instead of a running average).
"""

from __future__ import annotations

import keras
import numpy as np

CHUNK = 1000  # pictures per forward pass: bounded memory, whatever the count asked for


def pictures(x_train: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` training pictures drawn without replacement by `seed` (all of them if
    there are no more), the same ones for every validation of a run."""
    if count >= len(x_train):
        return x_train
    return x_train[np.sort(np.random.default_rng(seed).choice(len(x_train), count, replace=False))]


def layers_to_recalibrate(model: keras.Model) -> list:
    """The model's own trainable BatchNormalization layers, in order (frozen ones, as in
    a fine-tuned network's features, keep the statistics they came with)."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def recalibrate(model: keras.Model, images: np.ndarray) -> int:
    """Recompute the moving mean and variance of every layer `layers_to_recalibrate`
    finds from `images` (clean pictures, as the model takes them). Returns how many
    layers it set."""
    found = layers_to_recalibrate(model)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    for layer in found:
        # The input of this layer, as the network computes it in inference mode: no
        # augmentation, no dropout, the earlier layers' new statistics.
        feed = keras.Model(inputs, layer.input)
        axes = None
        total = squares = 0.0
        count = 0
        for start in range(0, len(images), CHUNK):
            out = keras.ops.convert_to_numpy(feed(images[start : start + CHUNK], training=False))
            out = out.astype(np.float64)
            if axes is None:
                channel = layer.axis % out.ndim
                axes = tuple(a for a in range(out.ndim) if a != channel)
            total = total + out.sum(axis=axes)
            squares = squares + np.square(out).sum(axis=axes)
            count += out.size // out.shape[channel]
        mean = total / count
        # The population variance, as BatchNormalization computes a batch's in training.
        variance = np.maximum(squares / count - np.square(mean), 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return len(found)


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Before each validation, the statistics of the weights being validated (the
    averaged ones with trainer.ema: place this after SwapEMAWeights), so that validation,
    the best checkpoint and the shipped model all use them. Training is unaffected: it
    normalises with each batch's own statistics, and the moving averages it updates from
    there are recomputed again before the next validation."""

    def __init__(self, images: np.ndarray):
        super().__init__()
        self.images = images

    def on_test_begin(self, logs=None):
        recalibrate(self.model, self.images)
