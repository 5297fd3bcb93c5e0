"""Models: config in, keras.Model out.

The model group describes the architecture; the regularization group decides where
dropout and L2 go, so every model can be combined with every regularization.
All models take (28, 28, 1) floats in [0, 1] and output 10 softmax probabilities.
"""

from __future__ import annotations

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


def build_optimizer(cfg) -> keras.optimizers.Optimizer:
    """A Keras optimizer from an optimizer config (see conf/optimizer/)."""
    common = {"learning_rate": cfg.learning_rate, "clipnorm": cfg.clipnorm}
    if cfg.name == "adam":
        return keras.optimizers.Adam(
            beta_1=cfg.beta_1,
            beta_2=cfg.beta_2,
            epsilon=cfg.epsilon,
            amsgrad=cfg.amsgrad,
            **common,
        )
    if cfg.name == "adamw":
        return keras.optimizers.AdamW(
            weight_decay=cfg.weight_decay,
            beta_1=cfg.beta_1,
            beta_2=cfg.beta_2,
            epsilon=cfg.epsilon,
            **common,
        )
    if cfg.name == "sgd":
        return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if cfg.name == "rmsprop":
        return keras.optimizers.RMSprop(
            rho=cfg.rho,
            momentum=cfg.momentum,
            epsilon=cfg.epsilon,
            centered=cfg.centered,
            **common,
        )
    raise ValueError(f"optimizer.name: unknown optimizer {cfg.name!r}")


def summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)
