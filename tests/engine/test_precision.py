"""`--precision`: bf16 (and fp16) autocast in training and inference on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from revmed import config
from revmed.checkpoint import read_payload
from revmed.engine.setup import setup_training
from revmed.inference import Translator
from revmed.io import read_volume

def _train(data, tiny, run_dir, precision):
    preset = config.load_preset("demo-sr", [*tiny, f"train.precision='{precision}'"])
    trainer = setup_training(preset, data, run_dir, torch.device("cpu"))
    return trainer, trainer.fit()


def test_bf16_training_logs_a_larger_core_reconstruction_error(sr_data, tiny_sr,
                                                               tmp_path):
    _, fp32 = _train(sr_data, tiny_sr, tmp_path / "fp32", "fp32")
    trainer, bf16 = _train(sr_data, tiny_sr, tmp_path / "bf16", "bf16")
    for record in (fp32, bf16):
        assert np.isfinite(record["g_loss"]) and np.isfinite(record["val_psnr"])
    # float32 rebuilds the core's input to rounding; bfloat16 (8-bit mantissa) does not
    assert fp32["core_recon_error"] < 1e-5
    assert 1e-4 < bf16["core_recon_error"] < 0.5
    logged = json.loads((tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["core_recon_error"] == bf16["core_recon_error"]
    # weights and the checkpoint stay float32; the preset records the precision
    checkpoint = read_payload(tmp_path / "bf16" / "last.pt")
    assert all(v.dtype == torch.float32 for v in checkpoint["state"]["generator"].values()
               if v.is_floating_point())
    assert checkpoint["preset"]["train"]["precision"] == "bf16"
    # the two runs really differ: autocast was on
    a = read_payload(tmp_path / "fp32" / "last.pt")["state"]["generator"]
    b = checkpoint["state"]["generator"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_fp16_training_uses_a_gradient_scaler_that_resume_restores(sr_data, tiny_sr,
                                                                  tmp_path, recwarn):
    trainer, record = _train(sr_data, tiny_sr, tmp_path / "fp16", "fp16")
    assert trainer.training.scaler.is_enabled() and np.isfinite(record["g_loss"])
    # the scaler skips its first steps; the schedule stepping after them is not a mistake
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]
    saved = read_payload(tmp_path / "fp16" / "last.pt")["state"]["scaler"]
    assert saved["scale"] > 0
    preset = config.load_preset("demo-sr", [*tiny_sr, "train.precision='fp16'",
                                            "train.epochs=2"])
    resumed = setup_training(preset, sr_data, tmp_path / "fp16", torch.device("cpu"), resume=True)
    assert resumed.training.scaler.get_scale() == saved["scale"]


def test_bf16_inference_is_close_to_fp32_and_not_identical(sr_model, lr_scan, tmp_path,
                                                           cli, monkeypatch):
    # as on a CPU with oneDNN bf16 convolutions (AVX-512); elsewhere PyTorch's slow reference
    # convolution runs it, which on this tiny volume is still quick
    monkeypatch.setattr("revmed.runtime.onednn_supports", lambda dtype: True)
    path, model = lr_scan, sr_model
    outputs = {}
    for precision in ("fp32", "bf16"):
        result = cli("infer", path, "-o", tmp_path / f"{precision}.nii.gz", "--model", model,
                     "--precision", precision, "--quiet")
        assert result.code == 0, result.err
        outputs[precision] = read_volume(tmp_path / f"{precision}.nii.gz").array
    direct = Translator.load(model).translate(read_volume(path), precision="bf16").array
    np.testing.assert_array_equal(direct, outputs["bf16"])
    difference = np.abs(outputs["bf16"] - outputs["fp32"])
    assert 0 < difference.max() < 60.0  # HU, in a 1500 HU window
    bad = cli("infer", path, "-o", tmp_path / "x.nii.gz", "--model", model, "--precision",
              "fp8")
    assert bad.code == 2 and "fp8" in bad.err


def test_bf16_inference_on_a_cpu_without_onednn_bf16_runs_fp32_and_says_so(
        sr_model, lr_scan, tmp_path, cli, monkeypatch):
    monkeypatch.setattr("revmed.runtime.onednn_supports", lambda dtype: dtype == torch.float32)
    outputs, errors = {}, {}
    for precision in ("fp32", "bf16"):
        result = cli("infer", lr_scan, "-o", tmp_path / f"{precision}.nii.gz", "--model",
                     sr_model, "--precision", precision, "--quiet")
        assert result.code == 0, result.err
        outputs[precision] = read_volume(tmp_path / f"{precision}.nii.gz").array
        errors[precision] = result.err
    np.testing.assert_array_equal(outputs["bf16"], outputs["fp32"])
    assert "running fp32" in errors["bf16"] and "running fp32" not in errors["fp32"]


def test_bf16_on_the_cpu_refuses_an_iunet_scale_two_voxels_deep():
    """PyTorch's CPU bf16 convolution gives wrong weight gradients on grids 2 voxels deep;
    such an iUNet run is refused up front, and the grids around it are not."""
    from revmed.engine.setup import build_training_step
    from revmed.errors import ConfigError
    from revmed.regions import BRATS

    def step(patch, precision):
        preset = config.load_preset("brats-seg", [
            f"patch.size={patch}", "model.width=8", f"train.precision='{precision}'"])
        return build_training_step(preset, torch.device("cpu"), labels=BRATS)

    # 5 scales: 32 -> 16, 8, 4, 2, 1 and 16 (padded to 16) -> 16, 8, 4, 2, 1
    for patch in ("[32,48,48]", "[16,64,64]"):
        with pytest.raises(ConfigError, match="2 voxels deep.*at least 48 deep"):
            step(patch, "bf16")
    step("[48,32,32]", "bf16")  # 48, 24, 12, 6, 3; the other axes are not affected
    step("[32,48,48]", "fp32")


def test_bf16_on_the_cpu_trains_the_critics_in_float32():
    """demo-da's critics at 32^3 reach outputs 2 voxels deep, where CPU bf16 convolution
    gives weight gradients of order 1e14 (demo-da --precision bf16 turned to NaN within an
    epoch): under CPU bf16 the critics run in float32, so their gradients match fp32's."""
    from revmed.engine.setup import build_training_step

    steps = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        preset = config.load_preset("demo-da", [f"train.precision='{precision}'"])
        steps[precision] = build_training_step(preset, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.rand(2, 1, 32, 32, 32, generator=g) * 2 - 1 for k in ("X", "Y")}
    fakes = {k: torch.rand(2, 1, 32, 32, 32, generator=g) * 2 - 1 for k in ("X", "Y")}
    grads = {}
    for precision, step in steps.items():
        assert all(c.full_precision == (precision == "bf16") for c in step.critics.values())
        with step.autocast():
            loss, _ = step.objective.critic_step(step.critics, batch, fakes)
        params = [p for c in step.critics.values() for p in c.parameters()]
        grads[precision] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
    error = (grads["bf16"] - grads["fp32"]).norm() / grads["fp32"].norm()
    assert torch.isfinite(grads["bf16"]).all() and error < 1e-4
