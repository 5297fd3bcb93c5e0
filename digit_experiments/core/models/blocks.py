"""Layers every model is made of: the input (with augmentation), conv and dense layers
with their regularization, and the softmax head.

The model group describes the architecture; the regularization group decides where
dropout, L2, batch normalisation and augmentation go, so every model can be combined
with every regularization. Keras is imported when a model is built, not before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from digit_experiments.core.config import RegularizationConfig


def kernel_regularizer(reg: RegularizationConfig):
    import keras

    return keras.regularizers.L2(reg.l2) if reg.l2 > 0 else None


def inputs(input_shape: tuple[int, ...], reg: RegularizationConfig) -> list:
    """The input, then the augmentation layers if asked (they act in training only)."""
    import keras
    from keras import layers

    stack = [keras.Input(shape=input_shape, name="image")]
    aug = reg.augment
    # With augment.single_transform the tf.data pipeline moves the pictures instead.
    if aug.enabled and not aug.in_pipeline:
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
    if keras.backend.backend() == "jax":
        # Keras marks these layers unfit for XLA (TensorFlow has no XLA kernel for their
        # transform), which turns XLA off for the whole model; on JAX they are jax.numpy
        # and compile, and without XLA every step would run op by op.
        for layer in stack[1:]:
            layer.supports_jit = True
    return stack


def with_activation(make, activation: str, reg: RegularizationConfig, name: str) -> list:
    """A Conv2D/Dense layer with its activation, or layer -> BatchNorm -> activation (the
    layer then needs no bias: batch normalisation has its own shift)."""
    from keras import layers

    if not reg.batchnorm:
        return [make(activation=activation, use_bias=True)]
    return [
        make(activation=None, use_bias=False),
        layers.BatchNormalization(name=f"{name}_bn"),
        layers.Activation(activation, name=f"{name}_act"),
    ]


def conv(
    filters: int,
    kernel: int,
    activation: str,
    reg: RegularizationConfig,
    name: str,
    padding: str = "valid",
) -> list:
    from keras import layers

    def make(**kwargs):
        return layers.Conv2D(
            filters,
            kernel,
            padding=padding,
            name=name,
            kernel_regularizer=kernel_regularizer(reg),
            **kwargs,
        )

    return with_activation(make, activation, reg, name)


def dense_head(
    units: list[int], activation: str, reg: RegularizationConfig, num_classes: int
) -> list:
    """Hidden Dense layers (each followed by dropout if asked) and the softmax output."""
    from keras import layers

    stack = []
    for i, n in enumerate(units, start=1):

        def make(n=n, i=i, **kwargs):
            return layers.Dense(
                n, kernel_regularizer=kernel_regularizer(reg), name=f"dense_{i}", **kwargs
            )

        stack.extend(with_activation(make, activation, reg, f"dense_{i}"))
        if reg.dense_dropout > 0:
            stack.append(layers.Dropout(reg.dense_dropout, name=f"dense_dropout_{i}"))
    stack.append(
        layers.Dense(
            num_classes,
            activation="softmax",
            kernel_regularizer=kernel_regularizer(reg),
            name="predictions",
            # Probabilities in float32 under a mixed precision policy too (float16's
            # softmax and log loss lose what small probabilities carry).
            dtype="float32",
        )
    )
    return stack
