"""Segmentation validation: every region per case, and best.pt by the worst region."""

from __future__ import annotations

import numpy as np
import torch

from revmed import config
from revmed.checkpoint import ModelCard
from revmed.data.synthetic import synthesize
from revmed.data.training_data import open_training_data
from revmed.engine.validation import Validator
from revmed.regions import BRATS


def test_best_is_chosen_by_the_worst_region_not_the_mean(tmp_path, monkeypatch):
    """Network A gets ET and WT exactly and never finds the tumour core (mean Dice 2/3, worst
    0); network B calls the whole tumour all three regions (every region found in part). The
    mean prefers A, the criterion best.pt follows prefers B."""
    synthesize("brats-seg", tmp_path / "data", cases=3, seed=1, shape=(32, 32, 32))
    data = open_training_data(tmp_path / "data")
    preset = config.load_preset("demo-seg")
    card = ModelCard.of(preset, data.channels, data.labels)
    validator = Validator(data.validation_cases, data.validation_kind, preset.data,
                          preset.train, card, torch.device("cpu"))
    assert validator.score_key == "val_dice_worst" and len(validator.cases) == 1

    def scores_of(logits: np.ndarray) -> dict[str, float]:
        monkeypatch.setattr(Validator, "_predict", lambda self, model, image: logits)
        return validator(torch.nn.Identity())

    scores_of(np.zeros((3, 32, 32, 32)))  # reads the validation case
    truth = BRATS.to_regions(validator._samples[0]["label"]) > 0.5
    a = np.where(truth, 5.0, -5.0)
    a[1] = -5.0  # no tumour core anywhere
    b = np.where(np.repeat(truth[2:3], 3, axis=0), 5.0, -5.0)  # WT for every region
    score_a, score_b = scores_of(a), scores_of(b)
    for s in (score_a, score_b):
        dices = [s[f"val_dice_{n}"] for n in BRATS.names]
        assert s["val_dice_worst"] == min(dices)
        assert abs(s["val_dice"] - np.mean(dices)) < 1e-9
    assert score_a["val_dice_ET"] == 1.0 and score_a["val_dice_TC"] == 0.0
    assert score_a["val_dice"] > score_b["val_dice"]
    assert score_b[validator.score_key] > score_a[validator.score_key]
