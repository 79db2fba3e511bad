"""A step with a NaN or infinite loss stops training: one error line, exit 2, and the run
folder keeps the last state whose losses were finite."""

from __future__ import annotations

import json
import math

import pytest
import torch

from revmed import config
from revmed.engine.setup import setup_training
from revmed.engine.step import TrainingStep
from revmed.engine.trainer import TrainingDiverged


def _poison(monkeypatch, at_call: int, value: float = math.nan):
    """Make the ``at_call``-th training step (1-based, counted over the run) report
    ``value`` as its generator loss, as a diverged step would."""
    real = TrainingStep.step
    calls = [0]

    def step(self, batch):
        logs = real(self, batch)
        calls[0] += 1
        if calls[0] == at_call:
            logs["g_loss"] = value
        return logs

    monkeypatch.setattr(TrainingStep, "step", step)


def test_a_nan_loss_stops_training_and_keeps_the_last_finite_checkpoint(sr_data, tiny_sr,
                                                                       tmp_path, monkeypatch):
    preset = config.load_preset("demo-sr", [*tiny_sr, "train.epochs=3"])
    run = tmp_path / "run"
    first = setup_training(preset, sr_data, run, torch.device("cpu"))
    steps = len(first.patches.epoch_patches(0)["X"]) // preset.train.batch_size
    assert steps >= 2
    _poison(monkeypatch, at_call=steps + 2)  # the second step of the second epoch
    with pytest.raises(TrainingDiverged) as error:
        first.fit()
    message = str(error.value)
    assert str(run) in message and "g_loss = nan" in message
    assert "epoch 2 step 2" in message and "after epoch 1" in message
    # nothing of the diverged epoch was written: one metrics line, last.pt from epoch 1
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    resumed = setup_training(preset, sr_data, run, torch.device("cpu"), resume=True)
    assert resumed.epoch == 1 and resumed.step_in_epoch == 0
    assert all(torch.isfinite(p).all() for p in resumed.model.parameters())


def test_the_cli_says_so_in_one_line_with_exit_code_2(sr_data, tiny_sr, tmp_path, cli,
                                                      monkeypatch):
    _poison(monkeypatch, at_call=1, value=math.inf)
    sets = [a for item in tiny_sr for a in ("--set", item)]
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out",
                 tmp_path / "run", *sets, "--precision", "bf16", "--quiet")
    assert result.code == 2
    (line,) = result.err.strip().splitlines()
    assert "diverged at epoch 1 step 1" in line and "g_loss = inf" in line
    assert "nothing was saved yet" in line and "--precision fp32" in line
    assert not (tmp_path / "run" / "last.pt").exists()
