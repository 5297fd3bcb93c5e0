"""Validation rules beside each schema field: `spec(default, ge=..., choices=...)`.

Hydra checks keys and types against the dataclass schemas when it composes the config;
the ranges and choices declared with `spec` are checked by `check` (config.validate),
which a job calls first, before TensorFlow or MLflow is imported. A schema that has an
`OPTION` (a model option's) must carry that option's name in its `name` field.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from digit_experiments.errors import ConfigError


def spec(default: Any = dataclasses.MISSING, *, factory: Any = None, **rules: Any) -> Any:
    """A dataclass field with validation rules: ge, gt, le, lt, choices, each (apply to items)."""
    if factory is not None:
        return field(default_factory=factory, metadata=rules)
    return field(default=default, metadata=rules)


def check(cfg: DictConfig) -> Any:
    """Check every range and choice of a composed config; return it as typed
    dataclasses. Raises ConfigError listing each problem with its dotted key."""
    problems: list[str] = []
    _unknown_keys(cfg, "", problems)
    obj = OmegaConf.to_object(cfg)
    _check(obj, "", problems)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return obj


def _unknown_keys(node: DictConfig, path: str, problems: list[str]) -> None:
    """Keys a schema does not know. Hydra refuses most at compose time, but `+key=...`
    can add one under a group typed Any (model, optimizer), and to_object would then
    drop it silently."""
    schema = OmegaConf.get_type(node)
    known = None
    if dataclasses.is_dataclass(schema):
        known = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        child = node._get_node(key)
        if known is not None and key not in known:
            problems.append(f"{path}{key} is not a known key (known: {', '.join(sorted(known))})")
        elif isinstance(child, DictConfig):
            _unknown_keys(child, f"{path}{key}.", problems)


def _check(node: Any, path: str, problems: list[str]) -> None:
    if not dataclasses.is_dataclass(node):
        return
    option = getattr(node, "OPTION", None)
    if option and node.name != option:
        # The name picks the builder: it must be the option whose schema this is.
        problems.append(f"{path}name must be one of [{option}], got {node.name!r}")
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{path}{f.name}"
        if dataclasses.is_dataclass(value):
            _check(value, key + ".", problems)
            continue
        rules = dict(f.metadata)
        if not rules or value is None:
            continue
        if rules.pop("each", False):
            for i, item in enumerate(value):
                _check_value(item, f"{key}[{i}]", rules, problems)
            if not value:
                problems.append(f"{key} must not be empty")
        else:
            _check_value(value, key, rules, problems)
    # Rules a field's own spec cannot say (a list that needs one item per block, say): a
    # schema's `problems()` names them, each starting with the field's key.
    for problem in getattr(node, "problems", lambda: [])():
        problems.append(f"{path}{problem}")


def _check_value(value: Any, key: str, rules: dict, problems: list[str]) -> None:
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(map(str, choices))
        problems.append(f"{key} must be one of [{allowed}], got {value!r}")
        return
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{key} must be a finite number, got {value}")
        return
    for rule, (symbol, holds) in _BOUNDS.items():
        if rule in rules and not holds(value, rules[rule]):
            hint = _range_hint(rules)
            problems.append(f"{key} must be {symbol} {rules[rule]}, got {value} ({hint})")
            return


_BOUNDS = {
    "ge": (">=", operator.ge),
    "gt": (">", operator.gt),
    "le": ("<=", operator.le),
    "lt": ("<", operator.lt),
}


def _range_hint(rules: dict) -> str:
    low = f"[{rules['ge']}" if "ge" in rules else f"({rules['gt']}" if "gt" in rules else "(-inf"
    high = f"{rules['le']}]" if "le" in rules else f"{rules['lt']})" if "lt" in rules else "inf)"
    return f"allowed range {low}, {high}"
