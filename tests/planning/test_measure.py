"""revmed.planning.measure: measured training-step peaks against the fitted model, and the
random batches a measurement runs on."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from revmed import config
from revmed.planning import (
    BYTES_PER_PARAMETER,
    count_parameters,
    measure_step,
    synthetic_batch,
)
from revmed.planning.measure import stand_in_labels, step_labels
from revmed.regions import BRATS, LabelSet

FIT_EDGES = (24, 32, 40)
HELD_OUT = 48  # not used in the fit: 1.7 times the voxels of the largest fitted patch
BATCH = 2


def test_prediction_at_a_larger_patch_is_within_20_percent_of_the_measured_peak(
        tiny, tiny_setup, fitted):
    model, fits = fitted
    held = measure_step(tiny, [HELD_OUT] * 3, BATCH)
    predicted = model.peak(tiny_setup, [HELD_OUT] * 3, BATCH, count_parameters(tiny_setup))
    assert held.peak > fits[-1].peak  # the measurement sees the larger patch
    assert abs(predicted - held.peak) <= 0.2 * held.peak, (predicted, held.peak)
    # activations dominate: the per-voxel term is most of the held-out peak
    assert BATCH * HELD_OUT**3 * model.per_voxel > 0.8 * held.peak


def test_activation_memory_does_not_grow_with_reversible_depth(tiny, tiny_setup, fitted):
    """The per-voxel cost measured at depth 8 is the one fitted at depth 2, while the
    parameters grow; a plain-autograd core would store activations for each added block."""
    model, fits = fitted
    edge, shallow = FIT_EDGES[1], fits[1]
    deep = measure_step(replace(tiny, model=tiny_setup.with_depth(8).model), [edge] * 3, BATCH)
    assert deep.depth == 8 and deep.parameters > shallow.parameters
    params = BYTES_PER_PARAMETER * deep.parameters
    deep_per_voxel = (deep.peak - model.fixed - params) / (BATCH * edge**3)
    assert abs(deep_per_voxel - model.per_voxel) <= 0.1 * model.per_voxel, \
        (model.per_voxel, deep_per_voxel)
    # six more blocks cost less than half of one core activation (8 channels, float32) beyond
    # their parameters (measured: about 0.1); with memory_saving=false they cost about 70
    activation = BATCH * edge**3 * 8 * 4
    grown = deep.peak - shallow.peak - BYTES_PER_PARAMETER * (deep.parameters
                                                              - shallow.parameters)
    assert grown < 0.5 * activation, (grown, activation)


def test_image_batch_is_x_and_y_in_the_network_range():
    batch = synthetic_batch(2, 3, None, [5, 6, 7], 4, torch.device("cpu"))
    assert set(batch) == {"X", "Y"}
    assert batch["X"].shape == (4, 2, 5, 6, 7) and batch["Y"].shape == (4, 3, 5, 6, 7)
    for t in batch.values():
        assert t.dtype == torch.float32 and -1 <= float(t.min()) and float(t.max()) <= 1
    again = synthetic_batch(2, 3, None, [5, 6, 7], 4, torch.device("cpu"))
    assert all(torch.equal(batch[k], again[k]) for k in batch)  # seeded


@pytest.mark.parametrize(("labels", "values"), [
    (BRATS, {0, 1, 2, 4}),
    (LabelSet({"liver": 3, "tumour": 7}), {0, 3, 7}),
])
def test_label_batch_draws_the_label_sets_values_and_the_background(labels, values):
    batch = synthetic_batch(4, 3, labels, [8, 8, 8], 2, torch.device("cpu"))
    assert set(batch) == {"X", "label"} and batch["X"].shape == (2, 4, 8, 8, 8)
    assert batch["label"].shape == (2, 1, 8, 8, 8) and batch["label"].dtype == torch.uint8
    assert set(batch["label"].unique().tolist()) == values  # each of them, and nothing else


def test_a_segmentation_step_is_measured_with_the_label_set_given():
    """The label set travels to the measuring process: two regions train a two-channel iUNet
    (BraTS's three would not fit its outputs)."""
    preset = config.load_preset("demo-seg", ["data.out_channels=2", "model.width=4",
                                             "model.scales=2"])
    labels = LabelSet({"organ": 1, "lesion": 5}, {"organ": ("organ", "lesion"),
                                                  "lesion": ("lesion",)})
    measured = measure_step(preset, [8, 8, 8], 2, labels=labels)
    assert measured.patch == [8, 8, 8] and measured.batch == 2 and measured.pool == 0
    assert measured.depth == preset.model.blocks_per_scale and measured.peak > 0
    with pytest.raises(RuntimeError, match="measuring demo-seg at 8x8x8 x 2 failed"):
        measure_step(preset, [8, 8, 8], 2, labels=BRATS)  # three regions for two outputs
    stand_in = measure_step(preset, [8, 8, 8], 2)  # no data: as many regions as outputs
    assert stand_in.parameters == measured.parameters and stand_in.peak > 0


def test_without_data_a_segmentation_step_learns_one_region_per_output():
    labels = stand_in_labels(3)
    assert labels.names == ("region1", "region2", "region3") and labels.codes == (0, 1, 2, 3)
    assert step_labels("segmentation", 3, None).names == labels.names
    assert step_labels("segmentation", 3, BRATS) is BRATS
    assert step_labels("paired", 1, BRATS) is None
