"""Shared by the planner's tests: a narrow demo-sr RevGAN (paired objective, both critics,
Adam) and the planner's own fit of it, measured for real (a fresh process per step on the
CPU, peak resident memory)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from revmed import config
from revmed.planning import TrainingSetup, measure_fit, measure_step


def _setup_of(preset) -> TrainingSetup:
    return TrainingSetup(preset.name, tuple(preset.patch.size), preset.model, preset.data,
                         preset.train)


def _measurer(preset, device="cpu"):
    def measure(setup, patch, batch):
        return measure_step(replace(preset, model=setup.model), patch, batch, device)
    return measure


@pytest.fixture(scope="session")
def setup_of():
    """``setup_of(preset)``: the planner's ``TrainingSetup`` of a preset, as ``plan`` makes
    it."""
    return _setup_of


@pytest.fixture(scope="session")
def measurer():
    """``measurer(preset)``: the ``measure(setup, patch, batch)`` that ``plan`` gives
    ``measure_fit``: ``preset`` with the setup's ``[model]`` keys, by ``measure_step``."""
    return _measurer


@pytest.fixture(scope="session")
def tiny_sets():
    """``--set`` values of the narrow demo-sr: channels-last off and the 3-layer critic (whose
    24^3 smallest patch starts the fit), as the figures of these tests (80 MiB) were measured."""
    return ["model.width=8", "model.disc_width=4", "train.channels_last=false",
            "model.disc_layers=3"]


@pytest.fixture(scope="session")
def tiny(tiny_sets):
    return config.load_preset("demo-sr", tiny_sets)


@pytest.fixture(scope="session")
def tiny_setup(tiny):
    return _setup_of(tiny)


@pytest.fixture(scope="session")
def fitted(tiny, tiny_setup):
    """The planner's own fit: steps measured at 24^3, 32^3 and 40^3, batch 2, depth 2."""
    model, fits = measure_fit(tiny_setup, _measurer(tiny))
    assert [(m.patch[0], m.batch, m.depth) for m in fits] == [(e, 2, 2) for e in (24, 32, 40)]
    return model, fits
