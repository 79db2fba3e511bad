"""Under a time limit the learning-rate decay follows the time when the time runs ahead of the
epochs, so a slow or loaded machine still ends its run at a low rate."""

from __future__ import annotations

import pytest
import torch

from revmed import config
from revmed.engine import trainer as trainer_module
from revmed.engine.setup import setup_training
from revmed.engine.step import TrainingStep

LR, LIMIT = 1e-3, 1000.0


class _Clock:
    """A stand-in for the trainer's ``time`` module whose clock moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def _rates(monkeypatch, sr_data, tiny_sr, tmp_path, epochs_in_limit: float):
    """Train 2 + 2 epochs (decay over the last 2) on a fake clock on which the time limit is
    spent after ``epochs_in_limit`` epochs' steps; returns the generator's rate at every step,
    the steps per epoch and the last epoch's record."""
    clock = _Clock()
    monkeypatch.setattr(trainer_module, "time", clock)
    rates: list[float] = []
    real = TrainingStep.step
    preset = config.load_preset("demo-sr", [*tiny_sr, f"train.lr={LR}", "train.epochs=2",
                                            "train.epochs_decay=2", f"train.time_limit={LIMIT}"])
    trainer = setup_training(preset, sr_data, tmp_path / "run", torch.device("cpu"))
    steps = len(trainer.patches.epoch_patches(0)["X"]) // preset.train.batch_size

    def step(self, batch):
        rates.append(self.lr)
        clock.now += LIMIT / (epochs_in_limit * steps)
        return real(self, batch)

    monkeypatch.setattr(TrainingStep, "step", step)
    record = trainer.fit()
    return rates, steps, record


def test_the_decay_follows_the_time_when_the_time_runs_ahead(sr_data, tiny_sr, tmp_path,
                                                             monkeypatch):
    # the time limit is spent at half of the 4 epochs' steps
    rates, steps, record = _rates(monkeypatch, sr_data, tiny_sr, tmp_path, epochs_in_limit=2)
    assert steps >= 2
    # it stops at the first step that ends past the limit: after 2 epochs' steps or one more
    assert record["stopped_at_time_limit"] and len(rates) in (2 * steps, 2 * steps + 1)
    # the epoch schedule alone would run all of these at LR; the time's epoch before step
    # k + 1 is floor(4 * elapsed share), so its rates are those of epochs 0-3: LR, LR, 2/3
    # and 1/3 of LR
    dt, now, expected = LIMIT / (2 * steps), 0.0, []
    for _ in rates:
        expected.append(LR * (1, 1, 2 / 3, 1 / 3)[min(int(now / LIMIT * 4), 3)])
        now += dt
    assert rates == pytest.approx(expected, rel=1e-6)
    assert rates[0] == pytest.approx(LR) and rates[-1] == pytest.approx(LR / 3)

def test_a_run_whose_epochs_lead_keeps_the_epoch_schedule(sr_data, tiny_sr, tmp_path,
                                                          monkeypatch):
    rates, steps, record = _rates(monkeypatch, sr_data, tiny_sr, tmp_path, epochs_in_limit=8)
    assert not record.get("stopped_at_time_limit") and len(rates) == 4 * steps
    epoch_rates = [LR, LR, LR * 2 / 3, LR / 3]
    assert rates == pytest.approx([epoch_rates[k // steps] for k in range(4 * steps)], rel=1e-6)
