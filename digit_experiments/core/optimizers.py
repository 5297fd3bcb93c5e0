"""Optimizers: an optimizer config in, a Keras optimizer out."""

from __future__ import annotations

import dataclasses

# Option name (conf/optimizer/<name>.yaml) -> the Keras class.
KERAS_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}


def build_optimizer(cfg, learning_rate=None, **extra):
    """A Keras optimizer from an optimizer config (see conf/optimizer/).

    Every field of an optimizer's schema but `name` is named as Keras names the
    constructor's argument, so the config passes straight through. `learning_rate`
    replaces the configured rate (a schedule, for instance); `extra`: further arguments
    every Keras optimizer takes (use_ema, ema_momentum)."""
    import keras

    if cfg.name not in KERAS_NAMES:
        raise ValueError(f"optimizer.name: unknown optimizer {cfg.name!r}")
    arguments = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    del arguments["name"]
    if learning_rate is not None:
        arguments["learning_rate"] = learning_rate
    arguments.update(extra)
    return getattr(keras.optimizers, KERAS_NAMES[cfg.name])(**arguments)
