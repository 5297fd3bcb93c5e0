"""Learning-rate schedules: the rate at the start, the peak and the end of training."""

from __future__ import annotations

import keras
import pytest

from digit_experiments.core import schedules
from digit_experiments.core.config import ScheduleConfig


def _rate(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_constant_and_plateau_give_a_plain_rate():
    assert schedules.learning_rate(ScheduleConfig(name="constant"), 0.01, 10, 100) == 0.01
    assert schedules.learning_rate(ScheduleConfig(name="plateau"), 0.01, 10, 100) == 0.01
    (plateau,) = schedules.callbacks(ScheduleConfig(name="plateau", factor=0.3), 0.01)
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau) and plateau.factor == 0.3


def test_cosine_decays_from_the_peak_to_its_floor():
    schedule = schedules.learning_rate(
        ScheduleConfig(name="cosine", min_fraction=0.1), 0.01, 10, 100
    )
    assert _rate(schedule, 0) == pytest.approx(0.01)
    assert _rate(schedule, 500) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5), rel=1e-4)
    assert _rate(schedule, 1000) == pytest.approx(0.001, rel=1e-4)


def test_onecycle_ramps_up_then_anneals():
    schedule = schedules.learning_rate(
        ScheduleConfig(name="onecycle", min_fraction=0.01), 0.01, 10, 100
    )
    assert _rate(schedule, 0) == pytest.approx(0.01 / 25)
    assert _rate(schedule, 300) == pytest.approx(0.01, rel=1e-4)  # 30% warm-up by default
    assert _rate(schedule, 150) < _rate(schedule, 300)
    assert _rate(schedule, 1000) == pytest.approx(0.0001, rel=1e-3)
