"""The Keras side of a run, without any tracking: threads, seeding, compile, the
callbacks that checkpoint, stop early and guard against divergence, and the one pass of
test predictions. The app's run (digit_experiments.app.run) puts these steps in order
and hands what they produce to the tracking layer.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import keras
import numpy as np

from digit_experiments.core import schedules
from digit_experiments.core.config import Config
from digit_experiments.errors import TrainingDiverged

log = logging.getLogger(__name__)


def limit_threads(threads: int | None) -> bool:
    """Cap TensorFlow's threads (before it starts its thread pools). Returns whether the
    cap is in force: a later job in a reused worker process keeps the first one."""
    if threads is None:
        return False
    if keras.backend.backend() != "tensorflow":
        # JAX and PyTorch size their pools from the environment (XLA_FLAGS, torch's own
        # settings) before the first step; nothing can cap them from here.
        log.info("trainer.threads=%d not applied: it caps TensorFlow's threads", threads)
        return False
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if current == threads:
            return True
        log.warning(
            "could not limit TensorFlow to %d threads: it is already running with %s "
            "(set once per process)",
            threads,
            current or "all cores",
        )
        return False
    log.info("TensorFlow limited to %d threads", threads)
    return True


def fair_share(parallel_jobs: int) -> int | None:
    """Threads per job when a launcher runs several jobs at once (joblib n_jobs > 1):
    the cores split between them, so they do not fight over the same cores."""
    if parallel_jobs <= 1:
        return None  # TensorFlow's default: all cores
    return max(1, (os.cpu_count() or 1) // parallel_jobs)


def set_precision(precision: str) -> None:
    """trainer.precision for the layers built from now on. Set for every run: a sweep
    runs its jobs in one process, and Keras' policy is global."""
    keras.mixed_precision.set_global_policy(precision)


def seed_everything(seed: int, deterministic: bool) -> None:
    """One seed for NumPy, Python and TensorFlow: same config, same initial weights."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def compile_model(model: keras.Model, conf: Config, steps_per_epoch: int) -> None:
    """Optimizer (with its learning-rate schedule), loss and metrics, as configured."""
    from digit_experiments.core.optimizers import build_optimizer

    rate = schedules.learning_rate(
        conf.trainer.schedule, conf.optimizer.learning_rate, conf.trainer.epochs, steps_per_epoch
    )
    ema = {"use_ema": True, "ema_momentum": conf.trainer.ema} if conf.trainer.ema else {}
    if conf.trainer.jit_compile is False and keras.backend.backend() == "jax":
        log.warning(
            "trainer.jit_compile=false on the JAX backend runs every training step op by "
            "op, two orders of magnitude slower on a GPU: leave it at auto"
        )
    model.compile(
        optimizer=build_optimizer(conf.optimizer, learning_rate=rate, **ema),
        # One-hot targets, so that label smoothing is available (same loss without it).
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=conf.trainer.label_smoothing),
        metrics=["accuracy"],
        jit_compile=conf.trainer.jit_compile,
        steps_per_execution=conf.trainer.steps_per_execution,
    )


class _QuietLegacyH5(logging.Filter):
    """Keras warns at every checkpoint that .h5 is a legacy format. .h5 is a deliberate
    choice (plain keras.models.load_model opens it anywhere), so drop that warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "saving your model as an HDF5 file" not in record.getMessage()


def quiet_legacy_h5_warning() -> None:
    """Add the filter to absl's logger once per process (a sweep runs many jobs in one)."""
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _QuietLegacyH5) for f in logger.filters):
        logger.addFilter(_QuietLegacyH5())


def callbacks(
    conf: Config,
    checkpoint: Path,
    tracking: list = (),
    last_state: Path | None = None,
    best_so_far: float | None = None,
    recalibration_images: np.ndarray | None = None,
) -> list:
    """Checkpoints (best epoch, .h5; and the state after every epoch: weights and the
    optimizer's variables, to `last_state` when given), the `tracking` callbacks, the NaN
    guard (after them, so that the diverged epoch is still on the curves), the
    schedule's, early stopping. `best_so_far`: the monitored value to beat, for a
    resumed run. `recalibration_images`: the clean pictures trainer.recalibrate_bn
    recomputes batch normalisation's statistics on."""
    quiet_legacy_h5_warning()
    stack = []
    if last_state is not None:
        # First, so that with trainer.ema it holds the trained weights (the averages are
        # among the optimizer's variables): a resumed run goes on from where it was.
        stack.append(keras.callbacks.ModelCheckpoint(str(last_state), save_weights_only=True))
    if conf.trainer.ema:
        # From the end of each epoch to the start of the next the model holds the
        # averaged weights: the best checkpoint and early stopping see them, as
        # validation does.
        stack.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if recalibration_images is not None:
        from digit_experiments.core.batchnorm import RecalibrateBatchNorm

        # After the swap: the statistics are those of the weights validated and saved.
        stack.append(RecalibrateBatchNorm(recalibration_images))
    stack += [
        keras.callbacks.ModelCheckpoint(
            str(checkpoint),
            monitor=conf.trainer.checkpoint.monitor,
            save_best_only=True,
            initial_value_threshold=best_so_far,
            verbose=0,
        ),
        *tracking,
        NanGuard(),
        *schedules.callbacks(conf.trainer.schedule, conf.optimizer.learning_rate),
    ]
    stop = conf.trainer.early_stopping
    if stop.enabled:
        stack.append(
            keras.callbacks.EarlyStopping(
                monitor=stop.monitor,
                patience=stop.patience,
                min_delta=stop.min_delta,
                restore_best_weights=stop.restore_best_weights,
                # Resumed: epochs that do not beat the run's best so far count as waited.
                baseline=best_so_far if stop.monitor == conf.trainer.checkpoint.monitor else None,
                verbose=1,
            )
        )
    return stack


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


def current_learning_rate(optimizer) -> float:
    """The rate the optimizer uses now (a schedule is evaluated at the current step)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def test_predictions(
    model: keras.Model,
    x_test: np.ndarray,
    one_hot_test: np.ndarray,
    batch_size: int,
    answering: keras.Model | None = None,
) -> tuple[np.ndarray, float]:
    """(probabilities, test loss) from one pass over the test set. The loss comes from
    the same predictions, as evaluate() computes it: the compiled loss plus the weight
    penalties. `answering`: what gives the predictions, if not the compiled `model` (a
    model built around it: test-time shifts)."""
    probabilities = (answering or model).predict(x_test, batch_size=batch_size, verbose=0)
    test_loss = float(model.loss(one_hot_test, probabilities)) + sum(
        float(penalty) for penalty in model.losses
    )
    return probabilities, test_loss
