"""Shared fixtures for the dataset tests: tiny synthetic datasets, made once per session."""

from __future__ import annotations

import pytest

from revmed.data.synthetic import synthesize

#: Tiny grids for the tests (the defaults are for real runs).
TINY = {
    "chestct-sr": (32, 32, 24),
    "chestct-da": (32, 32, 24),
    "hcp-sr": (24, 24, 24),
    "brats-seg": (32, 32, 24),
}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """``tiny_dataset(task)``: a 3-case dataset of ``task`` at its tiny grid, seed 0 (cached)."""
    made = {}

    def make(task: str):
        if task not in made:
            out = tmp_path_factory.mktemp("synth") / task
            made[task] = synthesize(task, out, cases=3, seed=0, shape=TINY[task])
        return made[task]

    return make



@pytest.fixture(scope="session")
def tiny_shapes():
    """The tiny grid of every task, as used by ``tiny_dataset``."""
    return dict(TINY)
