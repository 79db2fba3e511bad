"""What the planner asks the model families (``revmed.models.registry.ModelFamily``) and what
``TrainingSetup`` makes of it; each value checked against the networks themselves."""

from __future__ import annotations

import math

import pytest
import torch

from revmed import config
from revmed.engine.setup import build_training_step
from revmed.models import (
    IUNetCore,
    PatchDiscriminator3D,
    get_family,
    model_spec,
    smallest_critic_edge,
)
from revmed.planning import count_parameters
from revmed.regions import BRATS, LabelSet


def _logits(layers: int, edge: int) -> tuple[int, ...] | None:
    """The logit grid a 2-wide critic of ``layers`` in training mode gives for an ``edge``^3
    input (None where the input is too small for its convolutions, or leaves an instance norm
    one voxel to normalise)."""
    critic = PatchDiscriminator3D(1, width=2, layers=layers)
    try:
        with torch.no_grad():
            out = critic(torch.rand(1, 1, edge, edge, edge))
    except (RuntimeError, ValueError):
        return None
    return tuple(out.shape[2:]) if out.numel() else None


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_the_critics_smallest_input_is_the_smallest_edge_that_gives_a_logit(layers):
    edge = 3 * 2**layers
    assert smallest_critic_edge(layers) == edge
    assert _logits(layers, edge) == (1, 1, 1)
    assert _logits(layers, edge - 1) is None


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_revgan_training_needs_the_critics_smallest_input_only_when_it_trains_critics(layers):
    critics = config.load_preset("demo-sr", [f"model.disc_layers={layers}"])
    plain = config.load_preset("demo-sr", [f"model.disc_layers={layers}", "train.lambda_gan=0"])
    family = get_family("revgan3d")
    assert critics.train.uses_critics and not plain.train.uses_critics
    assert family.smallest_edge(critics.model, critics.train) == 3 * 2**layers
    assert family.smallest_edge(plain.model, plain.train) == 1


def test_revgan_setup_edges_and_depth(setup_of):
    setup = setup_of(config.load_preset("demo-sr", ["model.disc_layers=3"]))
    assert setup.patch_multiple == 1 and setup.smallest_edge == 24
    assert setup.depth_key == "depth" and setup.depth == 2 and setup.family.min_depth == 0
    deeper = setup.with_depth(5)
    assert deeper.model.depth == 5 and deeper.depth == 5 and setup.model.depth == 2
    assert deeper.model.width == setup.model.width and deeper.train == setup.train
    plain = setup_of(config.load_preset("demo-sr", ["train.lambda_gan=0"]))
    assert plain.smallest_edge == 1 and plain.padded([5, 6, 7]) == [5, 6, 7]


@pytest.mark.parametrize("scales", [1, 2, 3, 5])
def test_iunet_patch_multiple_is_the_coarsest_scales_factor(scales, setup_of):
    multiple = 2 ** (scales - 1)  # scales - 1 halvings
    preset = config.load_preset("demo-seg", [f"model.scales={scales}"])
    setup = setup_of(preset)
    assert get_family("iunet3d").patch_multiple(preset.model) == multiple
    assert setup.patch_multiple == multiple
    # segmentation trains no critics: the smallest edge is the multiple itself
    assert setup.smallest_edge == multiple
    assert setup.padded([multiple + 1, 2 * multiple, 1]) == [2 * multiple, 2 * multiple, multiple]
    assert setup.voxels([multiple + 1, 2 * multiple, 1]) == 4 * multiple**3
    core = IUNetCore(4, scales=scales, blocks_per_scale=1)
    with torch.no_grad():
        assert core(torch.zeros(1, 4, multiple, multiple, 2 * multiple)).shape[2:] == \
            (multiple, multiple, 2 * multiple)
        if scales > 1:  # half the multiple along one axis is refused
            with pytest.raises(ValueError):
                core(torch.zeros(1, 4, multiple, multiple // 2, multiple))


def test_iunet_depth_is_blocks_per_scale_from_one(setup_of):
    setup = setup_of(config.load_preset("demo-seg"))
    assert setup.depth_key == "blocks_per_scale" and setup.family.min_depth == 1
    assert setup.with_depth(4).model.blocks_per_scale == 4 and setup.depth == 2


@pytest.mark.parametrize(("name", "sets"), [
    ("demo-sr", ["model.width=8", "model.disc_width=4"]),
    ("demo-da", ["train.objective=unpaired", "model.width=8"]),
    ("demo-sr", ["train.lambda_gan=0", "model.width=8"]),
    ("demo-seg", ["model.width=4"]),
])
def test_parameters_are_those_the_trainers_step_trains(name, sets, setup_of):
    preset = config.load_preset(name, sets)
    labels = BRATS if preset.train.objective == "segmentation" else None
    step = build_training_step(preset, torch.device("cpu"), labels=labels)
    trained = [step.model, *step.critics.values()]
    assert count_parameters(setup_of(preset)) == sum(p.numel() for m in trained
                                                     for p in m.parameters())
    family = get_family(preset.model.kind)
    assert model_spec(preset) == (family.name, family.kwargs(preset.model, preset.data))


def test_pool_bytes_are_the_full_pools_of_the_unpaired_objective(setup_of):
    unpaired = setup_of(config.load_preset("demo-da", ["train.objective=unpaired",
                                                       "train.pool_size=7"]))
    patch = [10, 12, 14]
    assert unpaired.pool_bytes(patch) == 7 * (1 + 1) * math.prod(patch) * 4
    assert setup_of(config.load_preset("demo-da")).pool_bytes(patch) == 0  # paired
    no_critics = setup_of(config.load_preset("demo-da", ["train.objective=unpaired",
                                                         "train.lambda_gan=0"]))
    assert no_critics.pool_bytes(patch) == 0


def test_label_codes_are_the_background_and_each_label_value():
    assert BRATS.codes == (0, 1, 2, 4)
    assert LabelSet({"b": 9, "a": 3}).codes == (0, 3, 9)
