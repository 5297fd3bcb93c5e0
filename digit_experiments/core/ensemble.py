"""Several trained digit networks as one Keras model: the picture goes to every member,
and the members' softmax probabilities are averaged (keras.layers.Average).

One functional model, saved as one .keras file: whatever takes a trained network (the
served pyfunc, `digits predict`, `digits export`, the registry) takes an ensemble
without knowing it is one. An MLP and a CNN mix, since both take the same pictures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from digit_experiments.errors import ModelError

if TYPE_CHECKING:
    import keras

INPUT_NAME = "image"
# Keras' categorical cross-entropy clips probabilities to [EPSILON, 1 - EPSILON].
EPSILON = 1e-7


def check_compatible(networks: dict[str, keras.Model]) -> None:
    """Every member takes the same pictures and answers the same classes as the first;
    `networks` maps a label (what the error names, e.g. the run) to its network."""
    (first_label, first), *others = networks.items()
    for label, network in others:
        for what, mine, theirs in (
            ("takes input", network.input_shape, first.input_shape),
            ("gives output", network.output_shape, first.output_shape),
        ):
            if tuple(mine[1:]) != tuple(theirs[1:]):
                raise ModelError(
                    f"{label}: its model {what} {tuple(mine)}, but {first_label}'s "
                    f"{tuple(theirs)}; members of an ensemble must match"
                )


def build(networks: list[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model: the input to each network, the mean of their outputs. The networks are
    renamed member_0, member_1, ... in this order (a model's layer names must be unique,
    and two trained MLPs are both called `mlp`)."""
    import keras

    if len(networks) < 2:
        raise ModelError(f"an ensemble needs at least 2 networks, got {len(networks)}")
    shape = tuple(networks[0].input_shape[1:])
    inputs = keras.Input(shape=shape, name=INPUT_NAME)
    outputs = []
    for i, network in enumerate(networks):
        network.name = f"member_{i}"
        outputs.append(network(inputs))
    average = keras.layers.Average(name="average")(outputs)
    return keras.Model(inputs, average, name=name)


def cross_entropy(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean categorical cross-entropy of integer labels under `probabilities`, clipped as
    Keras clips it: the test_loss of a training run without its weight penalties (an
    ensemble adds none)."""
    chosen = probabilities[np.arange(len(y_true)), np.asarray(y_true, dtype=int)]
    return float(-np.mean(np.log(np.clip(chosen, EPSILON, 1.0 - EPSILON))))
