"""BraTS region coding and the segmentation objective."""

from __future__ import annotations

import numpy as np
import torch

from revmed.engine.objectives import SegmentationObjective
from revmed.regions import BRATS


def _labels(seed=0, shape=(6, 7, 5)):
    rng = np.random.default_rng(seed)
    return rng.choice([0, 1, 2, 4], size=(1, *shape)).astype(np.uint8)


def test_regions_round_trip_and_match_the_brats_definition():
    labels = _labels()
    regions = BRATS.to_regions(labels)
    assert regions.shape == (3, 6, 7, 5) and regions.dtype == np.float32
    # written out independently: ET = {4}, TC = {1, 4}, WT = {1, 2, 4}
    expected = {"ET": labels[0] == 4, "TC": np.isin(labels[0], (1, 4)),
                "WT": np.isin(labels[0], (1, 2, 4))}
    masks = BRATS.masks(labels)
    for channel, name in zip(regions, BRATS.names):
        np.testing.assert_array_equal(channel.astype(bool), expected[name])
        np.testing.assert_array_equal(masks[name], expected[name])
    np.testing.assert_array_equal(BRATS.to_labels(np.where(regions > 0.5, 1.0, -1.0)), labels)
    batch = torch.from_numpy(np.stack([labels, _labels(1)]))
    torch.testing.assert_close(BRATS.to_regions(batch)[0], torch.from_numpy(regions))


def test_inconsistent_predictions_are_nested_from_the_outside_in():
    regions = np.zeros((3, 1, 1, 4), dtype=bool)
    regions[2, ..., 0] = True                 # WT only -> oedema
    regions[1, ..., 1] = True                 # TC without WT -> still core
    regions[0, ..., 2] = True                 # ET alone -> enhancing
    assert BRATS.to_labels(np.where(regions, 1.0, -1.0)).ravel().tolist() == [2, 1, 4, 0]


def test_segmentation_loss_is_low_for_the_right_logits_and_high_for_wrong_ones():
    labels = torch.from_numpy(_labels()[None])
    target = BRATS.to_regions(labels)
    objective = SegmentationObjective(BRATS)
    right = objective.generator_step(lambda x: (target * 2 - 1) * 20, {}, {"X": target,
                                                                           "label": labels})[0]
    wrong = objective.generator_step(lambda x: (1 - target * 2) * 20, {}, {"X": target,
                                                                           "label": labels})[0]
    assert float(right) < 0.05 < 1.0 < float(wrong)
