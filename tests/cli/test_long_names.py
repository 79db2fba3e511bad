"""File names longer than the file system allows are one error line and exit code 2 before
any work, in every command that takes a path; a name that is legal but leaves no room for a
temporary name beside it (revmed writes every output under one first) is written."""

from __future__ import annotations

import numpy as np
import pytest

from revmed.io import Volume, make_affine, read_volume, write_volume

LONG = "a" * 300  # over NAME_MAX (255 bytes) on every common file system
LEGAL = "b" * 247  # legal, but ".NAME.tmp-HOST-PID-RANDOM.nii.gz" would not be


@pytest.fixture
def volume(tmp_path):
    array = np.random.default_rng(0).uniform(-1000, 300, (1, 8, 8, 8)).astype(np.float32)
    return write_volume(Volume(array, make_affine([1.0, 1.0, 1.0])), tmp_path / "v.nii.gz")


@pytest.mark.parametrize("command", ["info", "infer -o", "synth", "eval --json-out",
                                     "eval --csv", "eval --png", "train --out", "patchify"])
def test_a_name_too_long_is_one_line_before_any_work(cli, tmp_path, volume, tiny_model,
                                                     command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = {
        "info": ["info", f"{LONG}.nii.gz"],
        "infer -o": ["infer", volume, "-o", f"{LONG}.nii.gz", "--model", tiny_model],
        "synth": ["synth", "chestct-sr", LONG, "--cases", "2", "--shape", "16,16,16"],
        "eval --json-out": ["eval", volume, volume, "--json-out", f"{LONG}.json"],
        "eval --csv": ["eval", volume, volume, "--csv", f"{LONG}.csv"],
        "eval --png": ["eval", volume, volume, "--png", f"{LONG}.png"],
        "train --out": ["train", "--preset", "demo-sr", "--out", f"runs/{LONG}"],
        "patchify": ["patchify", "data/demo-sr", LONG, "--preset", "demo-sr"],
    }[command]
    if command in ("train --out", "patchify"):
        assert cli("synth", "chestct-sr", "data/demo-sr", "--cases", "3", "--shape",
                   "16,16,16", "-q").code == 0
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = cli(*args)
    assert result.code == 2, result.err
    (line,) = result.err.splitlines()
    assert line.startswith("error: ") and LONG in line
    assert "too long" in line or "the file system allows 255" in line
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("fmt", ["nii.gz", "dicom"])
def test_a_legal_long_name_is_written(cli, tmp_path, volume, tiny_model, fmt):
    out = tmp_path / (f"{LEGAL}.nii.gz" if fmt == "nii.gz" else LEGAL)
    result = cli("infer", volume, "-o", out, "--format", fmt, "--model", tiny_model, "-q")
    assert result.code == 0, result.err
    assert read_volume(out).shape == (8, 8, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["v.nii.gz", out.name])
