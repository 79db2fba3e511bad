"""selfsr's training budget: time by default, steps when asked, and a learning rate that
falls over whichever budget ends training."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from revmed.engine.step import TrainingStep
from revmed.errors import ConfigError
from revmed.io import Volume, make_affine
from revmed.selfsr import training
from revmed.selfsr.files import selfsr_files
from revmed.selfsr.plan import plan_refinement
from revmed.selfsr.refine import train_for
from revmed.selfsr.training import (FINAL_LR_FRACTION, TIME_LIMIT, budget_used, lr_scale,
                                    training_budget)

TINY = ["patch.size=[1,8,16]"]


def _scan() -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.normal(100, 10, (1, 16, 16, 4)).astype(np.float32),
                  make_affine((1.0, 1.0, 4.0)), source="thick")


@pytest.fixture
def clock(monkeypatch):
    """selfsr's clock, 20 s further at every reading: training time without waiting."""
    now = [0.0]

    def monotonic():
        now[0] += 20.0
        return now[0]
    monkeypatch.setattr(training.time, "monotonic", monotonic)


@pytest.fixture
def scales(monkeypatch):
    """The learning-rate scale each step ran at."""
    seen = []
    original = TrainingStep.scale_lr

    def record(self, scale):
        seen.append(scale)
        original(self, scale)
    monkeypatch.setattr(TrainingStep, "scale_lr", record)
    return seen


def test_the_budget_is_time_unless_steps_are_asked_for():
    assert training_budget(None, None) == (None, TIME_LIMIT)
    assert training_budget(100, None) == (100, 0.0)
    assert training_budget(100, 30.0) == (100, 30.0)
    assert training_budget(None, 30.0) == (None, 30.0)
    with pytest.raises(ConfigError, match="time_limit 0"):
        training_budget(None, 0.0)
    with pytest.raises(ConfigError, match="steps 0"):
        training_budget(0, None)
    # the defaults of every entry point leave the budget to time
    for entry in (selfsr_files, train_for, training.train_selfsr):
        params = inspect.signature(entry).parameters
        assert params["steps"].default is None and params["time_limit"].default is None


def test_the_rate_falls_from_the_presets_to_a_small_fraction():
    assert lr_scale(0.0) == pytest.approx(1.0)
    assert lr_scale(0.5) == pytest.approx((1 + FINAL_LR_FRACTION) / 2)
    assert lr_scale(1.0) == pytest.approx(FINAL_LR_FRACTION)
    values = [lr_scale(u / 10) for u in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert budget_used(5, 10, 1.0, 0.0) == 0.5
    assert budget_used(5, 10, 90.0, 100.0) == 0.9  # the larger share decides
    assert budget_used(5, None, 60.0, 240.0) == 0.25


def test_a_default_run_is_limited_by_time_and_ends_at_a_low_rate(clock, scales):
    scan = _scan()
    plan = plan_refinement(scan, "auto", "auto", None, "box")
    model = train_for([scan], [plan], overrides=TINY)
    # 20 s a step: the 240 s default allows 12 steps, whatever the step count would allow
    assert model.limited_by == "time" and model.steps == round(TIME_LIMIT / 20.0)
    assert len(scales) == model.steps and scales[0] == 1.0
    assert all(a > b for a, b in zip(scales, scales[1:]))
    assert scales[-1] < 0.05  # the last step runs near the end of the cosine
    for done, scale in enumerate(scales):  # the rate follows the time used
        assert scale == pytest.approx(lr_scale(done * 20.0 / TIME_LIMIT))


def test_steps_fix_the_count_and_the_schedule(clock, scales):
    scan = _scan()
    plan = plan_refinement(scan, "auto", "auto", None, "box")
    model = train_for([scan], [plan], overrides=TINY, steps=5)
    assert model.limited_by == "steps" and model.steps == 5  # 100 "s", no time limit
    assert scales == pytest.approx([lr_scale(d / 5) for d in range(5)])
    assert math.isclose(scales[0], 1.0)
