"""Models: config in, keras.Model out.

The model group describes the architecture; the regularization group decides where
dropout and L2 go, so every model can be combined with every regularization.
All models take (28, 28, 1) floats in [0, 1] and output 10 softmax probabilities.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from digit_experiments.config import CNNConfig, MLPConfig, RegularizationConfig, VGGConfig
from digit_experiments.data import IMAGE_SHAPE, NUM_CLASSES


def _kernel_regularizer(reg: RegularizationConfig):
    return keras.regularizers.L2(reg.l2) if reg.l2 > 0 else None


def _input(reg: RegularizationConfig) -> list:
    """The input, then the augmentation layers if asked (they act in training only)."""
    stack = [keras.Input(shape=IMAGE_SHAPE, name="image")]
    aug = reg.augment
    if aug.enabled:
        # fill_mode="constant": pixels moved in from outside are background (0), as in MNIST.
        if aug.rotation > 0:
            stack.append(
                layers.RandomRotation(
                    aug.rotation / 360.0, fill_mode="constant", name="augment_rotation"
                )
            )
        if aug.shift > 0:
            stack.append(
                layers.RandomTranslation(
                    aug.shift, aug.shift, fill_mode="constant", name="augment_shift"
                )
            )
        if aug.zoom > 0:
            stack.append(layers.RandomZoom(aug.zoom, fill_mode="constant", name="augment_zoom"))
    return stack


def _with_activation(make, activation: str, reg: RegularizationConfig, name: str) -> list:
    """A Conv2D/Dense layer with its activation, or layer -> BatchNorm -> activation (the
    layer then needs no bias: batch normalisation has its own shift)."""
    if not reg.batchnorm:
        return [make(activation=activation, use_bias=True)]
    return [
        make(activation=None, use_bias=False),
        layers.BatchNormalization(name=f"{name}_bn"),
        layers.Activation(activation, name=f"{name}_act"),
    ]


def _conv(
    filters: int,
    kernel: int,
    activation: str,
    reg: RegularizationConfig,
    name: str,
    padding: str = "valid",
) -> list:
    def make(**kwargs):
        return layers.Conv2D(
            filters,
            kernel,
            padding=padding,
            name=name,
            kernel_regularizer=_kernel_regularizer(reg),
            **kwargs,
        )

    return _with_activation(make, activation, reg, name)


def _dense_head(units: list[int], activation: str, reg: RegularizationConfig) -> list:
    """Hidden Dense layers (each followed by dropout if asked) and the softmax output."""
    stack = []
    for i, n in enumerate(units, start=1):

        def make(n=n, i=i, **kwargs):
            return layers.Dense(
                n, kernel_regularizer=_kernel_regularizer(reg), name=f"dense_{i}", **kwargs
            )

        stack.extend(_with_activation(make, activation, reg, f"dense_{i}"))
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
            *_input(reg),
            layers.Flatten(name="flatten"),
            *_dense_head(cfg.hidden_units, cfg.activation, reg),
        ],
        name="mlp",
    )


def build_cnn(cfg: CNNConfig, reg: RegularizationConfig) -> keras.Model:
    """The seed's CNN: (Conv2D -> MaxPool -> Dropout) per block -> Flatten -> dense head."""
    stack = _input(reg)
    for i, filters in enumerate(cfg.conv_filters, start=1):
        stack.extend(_conv(filters, cfg.kernel_size, cfg.activation, reg, f"conv_{i}"))
        stack.append(layers.MaxPooling2D(cfg.pool_size, name=f"pool_{i}"))
        if reg.conv_dropout > 0:
            stack.append(layers.Dropout(reg.conv_dropout, name=f"conv_dropout_{i}"))
    stack.append(layers.Flatten(name="flatten"))
    stack.extend(_dense_head(cfg.dense_units, cfg.activation, reg))
    return keras.Sequential(stack, name="cnn")


def build_vgg(cfg: VGGConfig, reg: RegularizationConfig) -> keras.Model:
    """VGG-style: per block, `convs_per_block` x (3x3 Conv2D -> BatchNorm -> activation),
    then 2x2 MaxPool (and dropout if asked); a dense head. Batch normalisation is part of
    this architecture, whatever the regularization says."""
    reg = dataclasses.replace(reg, batchnorm=True)
    stack = _input(reg)
    for b, filters in enumerate(cfg.block_filters, start=1):
        for c in range(1, cfg.convs_per_block + 1):
            stack.extend(
                _conv(filters, 3, cfg.activation, reg, f"block{b}_conv{c}", padding=cfg.padding)
            )
        stack.append(layers.MaxPooling2D(2, name=f"block{b}_pool"))
        if reg.conv_dropout > 0:
            stack.append(layers.Dropout(reg.conv_dropout, name=f"block{b}_dropout"))
    stack.append(layers.Flatten(name="flatten"))
    stack.extend(_dense_head(cfg.dense_units, cfg.activation, reg))
    return keras.Sequential(stack, name="vgg")


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn, "vgg": build_vgg}


def build_model(model_cfg, reg_cfg: RegularizationConfig) -> keras.Model:
    """Build the model named by `model_cfg.name`."""
    return BUILDERS[model_cfg.name](model_cfg, reg_cfg)


OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def build_optimizer(cfg, learning_rate=None) -> keras.optimizers.Optimizer:
    """A Keras optimizer from an optimizer config (see conf/optimizer/).

    Every field of an optimizer's schema but `name` is named as Keras names the
    constructor's argument, so the config passes straight through. `learning_rate`
    replaces the configured rate (a schedule, for instance)."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name: unknown optimizer {cfg.name!r}")
    arguments = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    del arguments["name"]
    if learning_rate is not None:
        arguments["learning_rate"] = learning_rate
    return OPTIMIZERS[cfg.name](**arguments)


def summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)
