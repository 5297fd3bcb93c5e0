"""Learning-rate schedules from trainer.schedule (see config.ScheduleConfig)."""

from __future__ import annotations

import keras

from digit_experiments.core.config import ScheduleConfig

# One-cycle starts at peak / 25 (Smith & Topin's default division factor).
ONECYCLE_START_DIVISOR = 25.0
# One-cycle without an explicit warm-up ramps up for the first 30% of training.
ONECYCLE_DEFAULT_WARMUP = 0.3


def learning_rate(cfg: ScheduleConfig, peak: float, epochs: int, steps_per_epoch: int):
    """What to give the optimizer as learning_rate: a float or a schedule over steps."""
    total = max(1, epochs * steps_per_epoch)
    warmup_epochs = cfg.warmup_epochs
    if cfg.name == "onecycle" and warmup_epochs == 0:
        warmup_epochs = ONECYCLE_DEFAULT_WARMUP * epochs
    warmup = min(total - 1, round(warmup_epochs * steps_per_epoch))
    if cfg.name in ("constant", "plateau"):
        return peak  # plateau works through a callback on a plain rate
    start = peak / ONECYCLE_START_DIVISOR if cfg.name == "onecycle" else 0.0
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak, total, alpha=cfg.min_fraction)
    return keras.optimizers.schedules.CosineDecay(
        start,
        total - warmup,
        alpha=cfg.min_fraction,
        warmup_target=peak,
        warmup_steps=warmup,
    )


def callbacks(cfg: ScheduleConfig, peak: float) -> list:
    if cfg.name != "plateau":
        return []
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=cfg.factor,
            patience=cfg.patience,
            min_lr=peak * cfg.min_fraction,
            verbose=1,
        )
    ]
