"""Shared by the training tests: a tiny super-resolution dataset and preset overrides that
make demo-sr train in seconds."""

from __future__ import annotations

import pytest

from revmed.data.synthetic import synthesize


@pytest.fixture(scope="session")
def tiny_sr():
    """``--set`` values that shrink demo-sr to one epoch of 16³ patches on an 8-wide model."""
    return ["patch.size=[16,16,16]", "patch.per_volume=4", "model.width=8", "model.depth=2",
            "model.disc_width=4", "model.disc_layers=2", "train.batch_size=2",
            "train.epochs=1", "train.time_limit=0"]


@pytest.fixture(scope="session")
def sr_data(tmp_path_factory):
    """A 3-case chest-CT super-resolution dataset of 24 x 24 x 16 volumes."""
    root = tmp_path_factory.mktemp("sr") / "data"
    synthesize("chestct-sr", root, cases=3, seed=4, shape=(24, 24, 16))
    return root


@pytest.fixture(scope="session")
def sr_model(sr_data, tiny_sr, tmp_path_factory):
    """``best.pt`` of a one-epoch fp32 run of the tiny demo-sr on ``sr_data``."""
    import torch

    from revmed import config
    from revmed.engine.setup import setup_training

    run = tmp_path_factory.mktemp("sr-run") / "run"
    setup_training(config.load_preset("demo-sr", tiny_sr), sr_data, run, torch.device("cpu")).fit()
    return run / "best.pt"


@pytest.fixture
def lr_scan(tmp_path):
    """A random 12 x 12 x 5 low-resolution CT volume (1 x 1 x 4 mm voxels) as NIfTI."""
    import numpy as np

    from revmed.io import Volume, make_affine, write_volume

    rng = np.random.default_rng(0)
    volume = Volume(rng.uniform(-1000, 300, (1, 12, 12, 5)).astype(np.float32),
                    make_affine([1.0, 1.0, 4.0]))
    return write_volume(volume, tmp_path / "lr.nii.gz")
