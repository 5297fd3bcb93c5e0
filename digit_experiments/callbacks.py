"""Keras callbacks: per-epoch tracking (modelled on mlflow.keras.MlflowCallback)."""

from __future__ import annotations

import math
import time

import keras


class EpochMetrics(keras.callbacks.Callback):
    """After every epoch, send Keras' logs plus the learning rate and the epoch's wall
    time to the run (step = epoch, from 1). The training code never calls MLflow itself.

    `record` is anything with an `epoch(step, metrics)` method: a tracking.RunLog.
    """

    def __init__(self, record):
        super().__init__()
        self.record = record
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics.pop("learning_rate", None)  # Keras adds it when a schedule is used
        metrics["learning_rate"] = current_learning_rate(self.model.optimizer)
        metrics["epoch_seconds"] = time.perf_counter() - self._started
        self.record.epoch(epoch + 1, metrics)


def current_learning_rate(optimizer) -> float:
    """The rate the optimizer uses now (a schedule is evaluated at the current step)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: nothing more can be learnt from this run."""


class NanGuard(keras.callbacks.Callback):
    """Stop a run whose loss is no longer finite (an absurd learning rate, say) by raising
    TrainingDiverged, so the run ends FAILED with the reason and what was logged so far.

    Keras' TerminateOnNaN only stops fitting, and the run would then be evaluated and
    logged as if it had finished. Checked once per epoch: a per-batch check would force a
    device sync at every step, and a diverged run loses at most one epoch.
    """

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise TrainingDiverged(
                    f"training diverged: {key} is {float(value)} after epoch {epoch + 1} "
                    "(learning rate too high?)"
                )
