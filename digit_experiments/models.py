"""Models: config in, keras.Model out.

The model group describes the architecture; the regularization group decides where
dropout and L2 go, so every model can be combined with every regularization.
All models take (28, 28, 1) floats in [0, 1] and output 10 softmax probabilities.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from digit_experiments.config import CNNConfig, MLPConfig, RegularizationConfig
from digit_experiments.data import IMAGE_SHAPE, NUM_CLASSES


def _kernel_regularizer(reg: RegularizationConfig):
    return keras.regularizers.L2(reg.l2) if reg.l2 > 0 else None


def _dense_head(units: list[int], activation: str, reg: RegularizationConfig) -> list:
    """Hidden Dense layers (each followed by dropout if asked) and the softmax output."""
    stack = []
    for i, n in enumerate(units, start=1):
        stack.append(
            layers.Dense(
                n,
                activation=activation,
                kernel_regularizer=_kernel_regularizer(reg),
                name=f"dense_{i}",
            )
        )
        if reg.dense_dropout > 0:
            stack.append(layers.Dropout(reg.dense_dropout, name=f"dense_dropout_{i}"))
    stack.append(
        layers.Dense(
            NUM_CLASSES,
            activation="softmax",
            kernel_regularizer=_kernel_regularizer(reg),
            name="predictions",
        )
    )
    return stack


def build_mlp(cfg: MLPConfig, reg: RegularizationConfig) -> keras.Model:
    """The seed's baseline: Flatten -> Dense 128 -> Dense 64 -> Dense 10 (sizes from cfg)."""
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE, name="image"),
            layers.Flatten(name="flatten"),
            *_dense_head(cfg.hidden_units, cfg.activation, reg),
        ],
        name="mlp",
    )


def build_cnn(cfg: CNNConfig, reg: RegularizationConfig) -> keras.Model:
    """The seed's CNN: (Conv2D -> MaxPool -> Dropout) per block -> Flatten -> dense head."""
    stack = [keras.Input(shape=IMAGE_SHAPE, name="image")]
    for i, filters in enumerate(cfg.conv_filters, start=1):
        stack.append(
            layers.Conv2D(
                filters,
                cfg.kernel_size,
                activation=cfg.activation,
                kernel_regularizer=_kernel_regularizer(reg),
                name=f"conv_{i}",
            )
        )
        stack.append(layers.MaxPooling2D(cfg.pool_size, name=f"pool_{i}"))
        if reg.conv_dropout > 0:
            stack.append(layers.Dropout(reg.conv_dropout, name=f"conv_dropout_{i}"))
    stack.append(layers.Flatten(name="flatten"))
    stack.extend(_dense_head(cfg.dense_units, cfg.activation, reg))
    return keras.Sequential(stack, name="cnn")


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn}


def build_model(model_cfg, reg_cfg: RegularizationConfig) -> keras.Model:
    """Build the model named by `model_cfg.name`."""
    return BUILDERS[model_cfg.name](model_cfg, reg_cfg)


OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def build_optimizer(cfg) -> keras.optimizers.Optimizer:
    """A Keras optimizer from an optimizer config (see conf/optimizer/).

    Every field of an optimizer's schema but `name` is named as Keras names the
    constructor's argument, so the config passes straight through."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name: unknown optimizer {cfg.name!r}")
    arguments = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    del arguments["name"]
    return OPTIMIZERS[cfg.name](**arguments)


def summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)
