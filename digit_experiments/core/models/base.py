"""What every model option is: a schema (its hyperparameters) that can build its network.

A model option is one module in this package and one YAML file in conf/model/, both
named after the option (`cnn.py`, `cnn.yaml`). The module defines a dataclass that
extends `ModelSpec` with the option's hyperparameters and a `build` method; defining it
is what registers it (its schema goes into Hydra's ConfigStore as /schema/model/<name>).
Nothing else lists the models: not the help, not the config, not the training code.

Modules here stay light (Keras is imported inside `build`), so composing a config and
`--help` never import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import MISSING

if TYPE_CHECKING:
    import keras

    from digit_experiments.core.config import RegularizationConfig

ACTIVATIONS = ("relu", "gelu", "elu", "selu", "swish", "tanh")


@dataclass
class ModelSpec:
    # The option's name (conf/model/<name>.yaml); validate() checks it matches the schema.
    name: str = MISSING
    # Start from a trained network instead of building this one (fine-tuning): any model
    # URI or file (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH, a .h5 or
    # .keras file). Its layers replace this option's architecture; see app/finetune.py.
    init_from: str | None = None

    # Filled in for each subclass: option name -> schema class.
    registry: ClassVar[dict[str, type[ModelSpec]]] = {}
    OPTION: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.OPTION = cls.__module__.rsplit(".", 1)[-1]
        ModelSpec.registry[cls.OPTION] = cls

    def build(
        self, input_shape: tuple[int, ...], num_classes: int, reg: RegularizationConfig
    ) -> keras.Model:
        """The network for images of `input_shape` (H, W, C) and `num_classes` classes,
        ending in softmax probabilities; `reg` says where dropout, L2, batch norm and
        augmentation go."""
        raise NotImplementedError
