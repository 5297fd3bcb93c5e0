"""The seed's CNN: (Conv2D -> MaxPool -> Dropout) per block -> Flatten -> dense head.
With conf/model/cnn.yaml: Conv2D 32 3x3 -> MaxPool -> Conv2D 64 3x3 -> MaxPool ->
Flatten -> Dense 128 -> Dense 10; dropout comes from the regularization group."""

from __future__ import annotations

from dataclasses import dataclass

from digit_experiments.core.models.base import ACTIVATIONS, ModelSpec
from digit_experiments.core.schema import spec


@dataclass
class CNN(ModelSpec):
    # One conv block per entry: Conv2D(filters, kernel) -> MaxPool(pool).
    conv_filters: list[int] = spec(factory=lambda: [32, 64], each=True, ge=1)
    kernel_size: int = spec(3, ge=1)
    pool_size: int = spec(2, ge=1)
    dense_units: list[int] = spec(factory=lambda: [128], each=True, ge=1)
    activation: str = spec("relu", choices=ACTIVATIONS)

    def build(self, input_shape, num_classes, reg):
        import keras
        from keras import layers

        from digit_experiments.core.models import blocks

        stack = blocks.inputs(input_shape, reg)
        for i, filters in enumerate(self.conv_filters, start=1):
            stack.extend(blocks.conv(filters, self.kernel_size, self.activation, reg, f"conv_{i}"))
            stack.append(layers.MaxPooling2D(self.pool_size, name=f"pool_{i}"))
            if reg.conv_dropout > 0:
                stack.append(layers.Dropout(reg.conv_dropout, name=f"conv_dropout_{i}"))
        stack.append(layers.Flatten(name="flatten"))
        stack.extend(blocks.dense_head(self.dense_units, self.activation, reg, num_classes))
        return keras.Sequential(stack, name=self.OPTION)
