"""The tracking callback (modelled on mlflow.keras.MlflowCallback): per-epoch metrics go
to the run through a Keras callback, so the training code never calls MLflow itself."""

from __future__ import annotations

import time

import keras

from digit_experiments.core.training import current_learning_rate


class EpochMetrics(keras.callbacks.Callback):
    """After every epoch, send Keras' logs plus the learning rate and the epoch's wall
    time to the run (step = epoch, from 1).

    `record` is anything with an `epoch(step, metrics)` method: a tracking RunLog.
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


class SaveState(keras.callbacks.Callback):
    """After every epoch (and after the checkpoints are written: it comes after them in
    the callbacks), send the training state to the run (`record.save_state`), so that an
    interrupted run can be resumed from any machine."""

    def __init__(self, record, weights):
        super().__init__()
        self.record = record
        self.weights = weights

    def on_epoch_end(self, epoch, logs=None):
        self.record.save_state(epoch + 1, self.weights)
