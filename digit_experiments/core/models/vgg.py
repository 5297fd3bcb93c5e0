"""A deeper VGG-style CNN: per block, `convs_per_block` x (3x3 Conv2D -> BatchNorm ->
activation), then 2x2 MaxPool (and dropout if asked); a dense head. Batch normalisation
is part of this architecture, whatever the regularization says."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from digit_experiments.core.models.base import ACTIVATIONS, ModelSpec
from digit_experiments.core.schema import spec


@dataclass
class VGG(ModelSpec):
    block_filters: list[int] = spec(factory=lambda: [32, 64, 128], each=True, ge=1)
    convs_per_block: int = spec(2, ge=1)
    # same: every block keeps its input size (28, 14, 7 ...); valid: each 3x3 conv trims a
    # pixel on every side, so the feature maps shrink faster and training is cheaper.
    padding: str = spec("same", choices=("same", "valid"))
    dense_units: list[int] = spec(factory=lambda: [256], each=True, ge=1)
    activation: str = spec("relu", choices=ACTIVATIONS)

    def build(self, input_shape, num_classes, reg):
        import keras
        from keras import layers

        from digit_experiments.core.models import blocks

        reg = dataclasses.replace(reg, batchnorm=True)
        stack = blocks.inputs(input_shape, reg)
        for b, filters in enumerate(self.block_filters, start=1):
            for c in range(1, self.convs_per_block + 1):
                stack.extend(
                    blocks.conv(
                        filters, 3, self.activation, reg, f"block{b}_conv{c}", padding=self.padding
                    )
                )
            stack.append(layers.MaxPooling2D(2, name=f"block{b}_pool"))
            if reg.conv_dropout > 0:
                stack.append(layers.Dropout(reg.conv_dropout, name=f"block{b}_dropout"))
        stack.append(layers.Flatten(name="flatten"))
        stack.extend(blocks.dense_head(self.dense_units, self.activation, reg, num_classes))
        return keras.Sequential(stack, name=self.OPTION)
