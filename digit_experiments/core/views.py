"""Test-time augmentation, declared as such: a network that answers the mean of its
softmax on a picture and on copies of it shifted by `shift` pixels up, down, left and
right (`trainer.test_time_shift`, `digits ensemble --test-time-shift`).

Whole-pixel shifts, made with Keras' ZeroPadding2D and Cropping2D: each copy moves
the pixels without resampling them, so nothing is blurred (a sub-pixel shift or a small
rotation would interpolate, and the networks here are tested on sharp pictures), and
the wrapped model is one plain Keras functional model. It saves as one .keras file that
Keras loads without this project, so the served pyfunc, `digits predict`, `digits
export` and the registry take it as they take a bare network. It costs five forward
passes per picture: the picture and its four straight neighbours (the four diagonal
ones would nearly double that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digit_experiments.errors import ModelError

if TYPE_CHECKING:
    import keras

NAME = "shifted_views"  # the wrapper's model name: how `inner` recognises one
NETWORK = "network"  # the wrapped network's name inside it
INPUT_NAME = "image"


def offsets(shift: int) -> list[tuple[int, int]]:
    """(rows down, columns right) of each view: the picture itself first."""
    return [(0, 0), (-shift, 0), (shift, 0), (0, -shift), (0, shift)]


def describe(shift: int) -> str:
    """The run's `test_time_augmentation` tag: what the shipped model does."""
    return (
        f"mean softmax over {len(offsets(shift))} views: the picture, and shifted "
        f"{shift} px up, down, left, right"
    )


def single_view(y_true, probabilities, loss: float) -> dict[str, float]:
    """What the model scored without its views, as the run records it beside its own
    test metrics (a training run's and an ensemble's alike)."""
    return {
        "single_view_test_accuracy": float((probabilities.argmax(axis=1) == y_true).mean()),
        "single_view_test_loss": float(loss),
    }


def shifted(inputs, rows: int, columns: int, index: int):
    """`inputs` (N, H, W, C) moved `rows` down and `columns` right, zeros filling in."""
    import keras

    if rows == 0 and columns == 0:
        return inputs
    pad = ((max(rows, 0), max(-rows, 0)), (max(columns, 0), max(-columns, 0)))
    crop = ((max(-rows, 0), max(rows, 0)), (max(-columns, 0), max(columns, 0)))
    padded = keras.layers.ZeroPadding2D(pad, name=f"pad_{index}")(inputs)
    return keras.layers.Cropping2D(crop, name=f"crop_{index}")(padded)


def wrap(network: keras.Model, shift: int) -> keras.Model:
    """One model: `network` on each view (one set of weights), the mean of its answers."""
    import keras

    shape = tuple(network.input_shape[1:])
    if len(shape) != 3:
        raise ModelError(
            f"test-time shifts need pictures (height, width, channels), but the network "
            f"takes input {tuple(network.input_shape)}"
        )
    if not 1 <= shift < min(shape[:2]):
        raise ModelError(
            f"test-time shift must be 1 to {min(shape[:2]) - 1} pixels for "
            f"{shape[0]}x{shape[1]} pictures, got {shift}"
        )
    inputs = keras.Input(shape=shape, name=INPUT_NAME)
    network.name = NETWORK
    answers = [
        network(shifted(inputs, rows, columns, i))
        for i, (rows, columns) in enumerate(offsets(shift))
    ]
    return keras.Model(inputs, keras.layers.Average(name="average")(answers), name=NAME)


def inner(model: keras.Model) -> keras.Model:
    """The network inside a `wrap`ped model (fine-tuning trains that one), else `model`."""
    if model.name == NAME:
        return model.get_layer(NETWORK)
    return model
