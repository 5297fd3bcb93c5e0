"""The tracking callback (modelled on mlflow.keras.MlflowCallback): per-epoch metrics go
to the run through a Keras callback, so the training code never calls MLflow itself."""

from __future__ import annotations

import time

import keras

from digit_experiments.core.training import current_learning_rate
from digit_experiments.tracking.lifecycle import raise_if_terminated


class EpochMetrics(keras.callbacks.Callback):
    """After every epoch, send Keras' logs plus the learning rate and the epoch's wall
    time to the run (step = epoch, from 1).

    With `state` (the file the checkpoint callback before this one writes the weights
    and optimizer variables to), the training state goes to the run first (tag
    `resume.epoch`), and the epoch's metrics only after it: a run killed in between is
    resumed from that epoch and resends the metrics the store lacks, so every step is
    logged exactly once (the other order would log the lost epoch twice: once before
    the kill, once when the resumed run trains it again).

    `record` is a tracking RunLog (`epoch`, `save_state`, `send_pending`).
    """

    def __init__(self, record, state=None):
        super().__init__()
        self.record = record
        self.state = state
        self._started = 0.0

    def on_train_batch_end(self, batch, logs=None):
        raise_if_terminated()  # a stop signal whose raise was lost ends the run here

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics.pop("learning_rate", None)  # Keras adds it when a schedule is used
        metrics["learning_rate"] = current_learning_rate(self.model.optimizer)
        metrics["epoch_seconds"] = time.perf_counter() - self._started
        self.record.epoch(epoch + 1, metrics, send=self.state is None)
        if self.state is not None:
            self.record.save_state(epoch + 1, self.state)
            self.record.send_pending()
