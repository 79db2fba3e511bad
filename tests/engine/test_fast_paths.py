"""``--compile`` and ``--channels-last`` through ``revmed train`` and ``revmed infer``.

Both change how the networks run, not what they compute: a run with both trains to the same
losses as a plain run from the same seed (up to float32 rounding), writes the same checkpoint
keys, and inference gives the same volume to rounding.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from revmed import config
from revmed.checkpoint import read_payload
from revmed.engine.setup import setup_training
from revmed.io import read_volume

@pytest.fixture
def compiled_graphs(caplog):
    """``graphs()``: Dynamo graphs made since the test began; fails the test if a compiled
    part fell back to eager mode (Dynamo's recompile limit)."""
    torch._dynamo.reset()
    start = counters["stats"]["unique_graphs"]
    caplog.set_level(logging.WARNING)
    yield lambda: counters["stats"]["unique_graphs"] - start
    assert not [r for r in caplog.records if "recompile_limit" in r.getMessage()]


def _train(cli, data, tiny, run_dir, *flags):
    sets = [a for item in tiny for a in ("--set", item)]
    result = cli("train", "--preset", "demo-sr", "--data", data, "--out", run_dir, *sets,
                 *flags, "--json", "--quiet")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_compiled_channels_last_training_matches_a_plain_run(sr_data, tiny_sr, tmp_path,
                                                             cli, compiled_graphs):
    plain = _train(cli, sr_data, tiny_sr, tmp_path / "plain", "--no-channels-last")
    assert compiled_graphs() == 0
    fast = _train(cli, sr_data, tiny_sr, tmp_path / "fast", "--compile", "--channels-last")
    assert compiled_graphs() >= 6  # generator and critic parts, training and validation
    # one epoch of several steps of the GAN objective: the same losses and scores to rounding
    for key in ("g_loss", "d_loss", "l1"):
        assert fast[key] == pytest.approx(plain[key], rel=1e-3), key
    assert fast["val_psnr"] == pytest.approx(plain["val_psnr"], abs=0.05)
    saved = read_payload(tmp_path / "fast" / "last.pt")
    reference = read_payload(tmp_path / "plain" / "last.pt")
    assert saved["preset"]["train"]["compile"] and saved["preset"]["train"]["channels_last"]
    assert not reference["preset"]["train"]["channels_last"]
    for part in ("generator", "critics"):  # same names, so either loads into a plain model
        assert list(saved["state"][part]) == list(reference["state"][part])
    # how the networks run may change on resume; what they compute may not
    preset = config.load_preset("demo-sr", [*tiny_sr, "train.epochs=2", "train.compile=false",
                                            "train.channels_last=false"])
    resumed = setup_training(preset, sr_data, tmp_path / "fast", torch.device("cpu"), resume=True)
    assert resumed.epoch == 1 and resumed.training.channels_last is False
    record = resumed.fit()
    assert record["epoch"] == 2 and np.isfinite(record["g_loss"])


def test_compiled_channels_last_inference_matches_plain(sr_model, lr_scan, tmp_path, cli,
                                                        compiled_graphs):
    path, model = lr_scan, sr_model
    outputs = {}
    for name, flags in (("plain", []), ("fast", ["--compile", "--channels-last"])):
        result = cli("infer", path, "-o", tmp_path / f"{name}.nii.gz", "--model", model,
                     *flags, "--quiet")
        assert result.code == 0, result.err
        outputs[name] = read_volume(tmp_path / f"{name}.nii.gz")
        assert (compiled_graphs() > 0) == (name == "fast")
    assert outputs["fast"].shape == outputs["plain"].shape
    np.testing.assert_allclose(outputs["fast"].affine, outputs["plain"].affine)
    assert np.abs(outputs["fast"].array - outputs["plain"].array).max() < 0.05  # HU


def test_infer_without_a_working_compiler_fails_before_writing(sr_model, lr_scan, tmp_path,
                                                                cli, monkeypatch):
    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("CppCompileError: no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    target = tmp_path / "out.nii.gz"
    result = cli("infer", lr_scan, "-o", target, "--model", sr_model, "--compile", "--quiet")
    assert result.code == 2 and "--compile" in result.err and "C++" in result.err
    assert len(result.err.strip().splitlines()) == 1 and not target.exists()
    assert list(tmp_path.glob(".*tmp*")) == []
