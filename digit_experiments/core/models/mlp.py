"""The seed's baseline MLP: Flatten -> Dense 128 -> Dense 64 -> Dense 10 (sizes from
conf/model/mlp.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from digit_experiments.core.models.base import ACTIVATIONS, ModelSpec
from digit_experiments.core.schema import spec


@dataclass
class MLP(ModelSpec):
    hidden_units: list[int] = spec(factory=lambda: [128, 64], each=True, ge=1)
    activation: str = spec("relu", choices=ACTIVATIONS)

    def build(self, input_shape, num_classes, reg):
        import keras
        from keras import layers

        from digit_experiments.core.models import blocks

        return keras.Sequential(
            [
                *blocks.inputs(input_shape, reg),
                layers.Flatten(name="flatten"),
                *blocks.dense_head(self.hidden_units, self.activation, reg, num_classes),
            ],
            name=self.OPTION,
        )
