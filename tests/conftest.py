"""Run the CLI in-process, capturing stdout and stderr separately."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from revmed.cli.app import run


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A width-4, depth-1 residual RevGAN checkpoint for kernel adaptation (8^3 windows)."""
    from revmed.checkpoint import write_payload
    from revmed.models import build_model

    kwargs = {"in_channels": 1, "out_channels": 1, "width": 4, "depth": 1, "residual": True}
    data = {"in_channels": 1, "out_channels": 1, "intensity": "window",
            "window": [-1150.0, 350.0], "sr_factors": [1, 1, 1], "sr_upsample": "bspline",
            "channels": []}
    return write_payload(tmp_path_factory.mktemp("model") / "m.pt", {
        "model": {"kind": "revgan3d", "kwargs": kwargs}, "data": data, "patch_size": [8, 8, 8],
        "preset": {"task": "da", "infer": {"overlap": 0.25}},
        "state": {"generator": build_model("revgan3d", **kwargs).state_dict()}})
