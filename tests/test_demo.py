"""The demo pipeline on a tiny budget: every stage runs and the outputs line up."""

from __future__ import annotations

import json

import numpy as np

from revmed.api import run_demo
from revmed.io import read_volume


def test_demo_pipeline_end_to_end(tmp_path):
    out = tmp_path / "demo"
    stages = []
    result = run_demo(out, time_limit=5.0, cases=3, shape=(32, 32, 24),
                      overrides=["patch.size=[16,16,16]", "patch.per_volume=2", "model.width=4",
                                 "model.disc_layers=2", "train.epochs=1"],
                      on_stage=stages.append)
    assert len(stages) == 5 and result.checkpoint.is_file()
    assert stages[2].startswith("trained 1 of 1 epoch(s)")
    (case,) = result.report.cases
    assert set(result.report.methods) == {"prediction", "trilinear", "tricubic"}
    for method in result.report.methods:
        assert np.isfinite(case.metrics[method]["psnr"])
    name = case.name
    sr = read_volume(out / "sr" / f"{name}.nii.gz")
    reference = read_volume(out / "data" / "test" / "Y" / f"{name}.nii.gz")
    low = read_volume(out / "low_res" / f"{name}.nii.gz")
    assert sr.shape == reference.shape and low.shape == (16, 16, 6)
    np.testing.assert_allclose(sr.affine, reference.affine, atol=1e-4)
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["data_range"] == 1500
    assert [p.suffix for p in result.previews] == [".png"] and result.previews[0].is_file()


def test_demo_refuses_an_existing_folder(cli, tmp_path):
    (tmp_path / "demo").mkdir()
    result = cli("demo", "--out", tmp_path / "demo")
    assert result.code == 2 and "exists" in result.err
