"""Fine-tuning, the Keras side: a trained network as the start of a new one.

`model.init_from=URI` gives the network (the app loads it, in safe mode); here it is
checked against the data (`check_fits`), its layers are taken over as they are, the
regularization's augmentation goes in front of them (replacing any the source had:
augmentation acts in training only, so the source's predictions do not change), and
`finetune.freeze` decides which of them keep their weights (`frozen_indices`):

- `none` (or `0`): every layer trains;
- `features`: everything before the dense head, the head being the Dense layers (with
  their dropout, batch normalisation, activations) after the last other layer
  (Flatten, a pooling or conv layer): the CNN's convolutions stay, its Dense 128 and
  softmax learn; an MLP is all head, so nothing is frozen (and a warning says so);
- `N`: the first N layers of the network (augmentation not counted).

Frozen BatchNormalization layers run in inference mode (Keras 3), as they should.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from digit_experiments.errors import ModelError

if TYPE_CHECKING:
    import keras

    from digit_experiments.core.config import RegularizationConfig

log = logging.getLogger(__name__)

# Layers a dense head is made of; any other layer ends the feature extractor.
HEAD_LAYERS = ("Dense", "Dropout", "BatchNormalization", "Activation", "LayerNormalization")
# Augmentation layers (core.models.blocks names them so): replaced, never frozen or counted.
AUGMENT_PREFIX = "augment_"


def check_fits(model: keras.Model, image_shape: tuple[int, ...], num_classes: int, uri: str):
    """Refuse, in one line, a network that cannot take the data's images or does not
    answer one probability per class."""
    shape = model.input_shape
    if not isinstance(shape, tuple) or tuple(shape[1:]) != tuple(image_shape):
        raise ModelError(
            f"model.init_from={uri}: the model takes input {shape}, but the data's images "
            f"are {tuple(image_shape)} (MNIST-style 28x28, one channel)"
        )
    out = model.output_shape
    if not isinstance(out, tuple) or len(out) != 2 or out[-1] != num_classes:
        raise ModelError(
            f"model.init_from={uri}: the model answers {out}, but the data have "
            f"{num_classes} classes (the digits 0-9): one probability per digit is needed"
        )


def body(model: keras.Model) -> list:
    """The network's own layers, in order: no input layer, no augmentation."""
    return [layer for layer in model.layers if not layer.name.startswith(AUGMENT_PREFIX)]


def units(model: keras.Model) -> list:
    """What finetune.freeze counts: a Sequential's own layers (`body`); any other
    network is one unit, nested whole."""
    import keras

    return body(model) if isinstance(model, keras.Sequential) else [model]


def head_start(layers: list) -> int:
    """Index of the first layer of the dense head (len(layers): no head)."""
    start = len(layers)
    while start > 0 and type(layers[start - 1]).__name__ in HEAD_LAYERS:
        start -= 1
    return start


def frozen_indices(
    layers: list, freeze: str, uri: str = "the model", quiet: bool = False
) -> list[int]:
    """Which of `layers` (see `body`) keep their weights for finetune.freeze=`freeze`.
    Refuses a number beyond the network's layers, and a choice that leaves nothing to
    train."""
    if freeze in ("none", "0"):
        return []
    if freeze == "features":
        indices = list(range(head_start(layers)))
        if not quiet and not any(layers[i].weights for i in indices):
            log.warning(
                "finetune.freeze=features: %s has no layer with weights before its dense "
                "head (%s); nothing is frozen",
                uri,
                ", ".join(layer.name for layer in layers),
            )
    else:
        count = int(freeze)
        if count > len(layers):
            raise ModelError(
                f"finetune.freeze={count}: {uri} has {len(layers)} layers "
                f"({', '.join(layer.name for layer in layers)})"
            )
        indices = list(range(count))
    left = [layer for i, layer in enumerate(layers) if i not in indices and layer.weights]
    if not left:
        raise ModelError(
            f"finetune.freeze={freeze} freezes every layer with weights of {uri}: nothing "
            "would be trained (freeze fewer layers)"
        )
    return indices


def network(
    source: keras.Model,
    reg: RegularizationConfig,
    image_shape: tuple[int, ...],
    freeze: str,
    uri: str = "the model",
) -> keras.Model:
    """The network to fine-tune: the source's layers (their weights, shared with
    `source`) behind the input and the configured augmentation, frozen as asked.
    A Sequential source stays one flat Sequential; any other is nested as one layer
    (and `freeze` then counts only that layer)."""
    import keras

    from digit_experiments.core.models import blocks

    stack = blocks.inputs(tuple(image_shape), reg)
    layers = units(source)
    if isinstance(source, keras.Sequential):
        model = keras.Sequential([*stack, *layers], name=source.name)
    else:
        inputs, x = stack[0], stack[0]
        for augment in stack[1:]:
            x = augment(x)
        model = keras.Model(inputs, source(x), name=source.name)
    frozen = set(frozen_indices(layers, freeze, uri, quiet=True))
    for i, layer in enumerate(layers):
        layer.trainable = i not in frozen  # a source saved with frozen layers starts anew
    return model


def frozen_layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in body(model) if not layer.trainable]


def trainable_params(model: keras.Model) -> int:
    import numpy as np

    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
