"""Run the CLI in-process, capturing stdout and stderr separately."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from revmed.cli.app import run


#: Files the tests read: real scanner DICOM (dicom/, README there) and checkpoints written by
#: an earlier revmed (old-checkpoints/, tests/test_old_checkpoints.py says how).
FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"


@pytest.fixture
def old_checkpoints() -> Path:
    """The folder of checkpoints written by an earlier revmed (tests/test_old_checkpoints.py)."""
    return FIXTURES / "old-checkpoints"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli("presets", "--json")`` -> Result(code, stdout, stderr)."""

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def write_tiny_checkpoint(path, task="da", sr_factors=(1, 1, 1), channels=(), infer=None):
    """An untrained width-4, depth-1 residual RevGAN checkpoint (8^3 windows) at ``path``."""
    from revmed.checkpoint import write_payload
    from revmed.models import build_model

    kwargs = {"in_channels": 1, "out_channels": 1, "width": 4, "depth": 1, "residual": True}
    data = {"in_channels": 1, "out_channels": 1, "intensity": "window",
            "window": [-1150.0, 350.0], "sr_factors": list(sr_factors),
            "sr_upsample": "bspline", "channels": list(channels)}
    preset = {"infer": infer or {"overlap": 0.25, "blend": "gaussian", "sw_batch_size": 2}}
    if task is not None:
        preset["task"] = task
    return write_payload(path, {
        "model": {"kind": "revgan3d", "kwargs": kwargs}, "data": data, "patch_size": [8, 8, 8],
        "preset": preset, "state": {"generator": build_model("revgan3d", **kwargs).state_dict()}})


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """``write_tiny_checkpoint`` for fixtures of other folders."""
    return write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A kernel-adaptation checkpoint of ``write_tiny_checkpoint`` (overlap 0.25)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "m.pt",
                                 infer={"overlap": 0.25})


def smooth_volume(shape=(16, 16, 16), seed=0, scale=400.0, offset=-200.0) -> np.ndarray:
    """A smooth ``(1, I, J, K)`` float32 volume: a sum of a few broad Gaussian blobs."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    out = np.zeros(shape)
    for _ in range(4):
        centre = rng.uniform(-0.5, 0.5, 3)
        width = rng.uniform(0.35, 0.6)
        r2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        out += rng.uniform(0.5, 1.0) * np.exp(-r2 / (2 * width**2))
    return (offset + scale * out).astype(np.float32)[None]


@pytest.fixture
def smooth():
    """``smooth(shape=(16, 16, 16), seed=0)`` -> a smooth ``(1, I, J, K)`` volume in HU-like
    values."""
    return smooth_volume
