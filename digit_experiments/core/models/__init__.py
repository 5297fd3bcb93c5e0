"""The model options: one module per option (see base.py), found by looking here."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from digit_experiments.core.models.base import ModelSpec

if TYPE_CHECKING:
    import keras

# Modules of this package that are not model options.
_HELPERS = {"base", "blocks"}


def specs() -> dict[str, type[ModelSpec]]:
    """Every model option: name -> schema class (importing each option's module)."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _HELPERS:
            importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(ModelSpec.registry.items()))


def build_model(
    model_cfg: ModelSpec, reg_cfg, input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """The network `model_cfg` describes, for the data's image shape and class count."""
    return model_cfg.build(tuple(input_shape), num_classes, reg_cfg)


def summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)
