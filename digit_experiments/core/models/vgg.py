"""A deeper VGG-style CNN: per block, `convs_per_block` x (Conv2D -> BatchNorm ->
activation), then 2x2 MaxPool (and dropout if asked); a dense head. Batch normalisation
is part of this architecture, whatever the regularization says."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from digit_experiments.core.models.base import ACTIVATIONS, ModelSpec
from digit_experiments.core.schema import spec


@dataclass
class VGG(ModelSpec):
    block_filters: list[int] = spec(factory=lambda: [32, 64, 128], each=True, ge=1)
    # Each an int for every block, or a list with one per block: [1, 2] with kernel_size
    # [5, 3] makes the first block one 5x5 conv, which sees what two 3x3 convs see at
    # 28x28 for about a twelfth of their multiply-adds (with 32 filters, the second 3x3
    # conv is half the network's work).
    convs_per_block: Any = 2
    kernel_size: Any = 3
    # same: every block keeps its input size (28, 14, 7 ...); valid: each k x k conv trims
    # (k - 1) / 2 pixels on every side, so the feature maps shrink faster and training is
    # cheaper.
    padding: str = spec("same", choices=("same", "valid"))
    dense_units: list[int] = spec(factory=lambda: [256], each=True, ge=1)
    activation: str = spec("relu", choices=ACTIVATIONS)

    def per_block(self, key: str) -> list[int]:
        """`convs_per_block` or `kernel_size` as one value per block."""
        value = getattr(self, key)
        return list(value) if isinstance(value, list) else [value] * len(self.block_filters)

    def problems(self) -> list[str]:
        found = []
        for key in ("convs_per_block", "kernel_size"):
            value = getattr(self, key)
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
                found.append(f"{key} must be an int >= 1 or a list of them, got {value!r}")
            elif isinstance(value, list) and len(value) != len(self.block_filters):
                found.append(
                    f"{key} must have one item per block ({len(self.block_filters)}, as "
                    f"block_filters), got {value!r}"
                )
        return found

    def build(self, input_shape, num_classes, reg):
        import keras
        from keras import layers

        from digit_experiments.core.models import blocks

        reg = dataclasses.replace(reg, batchnorm=True)
        stack = blocks.inputs(input_shape, reg)
        convs, kernels = self.per_block("convs_per_block"), self.per_block("kernel_size")
        for b, filters in enumerate(self.block_filters, start=1):
            for c in range(1, convs[b - 1] + 1):
                stack.extend(
                    blocks.conv(
                        filters,
                        kernels[b - 1],
                        self.activation,
                        reg,
                        f"block{b}_conv{c}",
                        padding=self.padding,
                    )
                )
            stack.append(layers.MaxPooling2D(2, name=f"block{b}_pool"))
            if reg.conv_dropout > 0:
                stack.append(layers.Dropout(reg.conv_dropout, name=f"block{b}_dropout"))
        stack.append(layers.Flatten(name="flatten"))
        stack.extend(blocks.dense_head(self.dense_units, self.activation, reg, num_classes))
        return keras.Sequential(stack, name=self.OPTION)
