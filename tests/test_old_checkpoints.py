"""Checkpoints written by revmed before the typed presets and model cards still load, predict
what they predicted then, and resume.

``tests/data/fixtures/old-checkpoints`` holds two ``best.pt`` files trained by revmed 0.1.0 as of the
commit before that redesign (9301c87), with the overrides below, and ``expected.npz``: what
that revmed's ``Translator`` and ``Segmenter`` made of the inputs ``_inputs`` draws.
(Super-resolution has since changed on purpose: outputs keep the input's full range.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from revmed import config
from revmed.checkpoint import load_checkpoint, read_payload
from revmed.inference import Segmenter, Translator, load_predictor
from revmed.inference.windows import sliding_window_predict
from revmed.io import Volume, make_affine, read_volume, write_volume
from revmed.transforms import denormalise, normalise, upsample

OLD = Path(__file__).resolve().parent / "data" / "fixtures" / "old-checkpoints"
SR_OVERRIDES = ["train.epochs=1", "train.time_limit=0", "patch.size=[16,16,16]",
                "patch.per_volume=2", "model.width=4", "model.depth=1", "train.lambda_gan=0",
                "train.batch_size=2"]
SEG_OVERRIDES = ["train.epochs=1", "train.time_limit=0", "patch.size=[16,16,16]",
                 "patch.per_volume=2", "model.width=4", "model.scales=2",
                 "model.blocks_per_scale=1"]
#: demo-seg's values of that time where the shipped preset has since changed.
SEG_THEN = ['patch.sampler="random"', "train.lr=1e-3", "train.epochs_decay=0"]
#: demo-sr's: the critic's default was 3 stride-2 layers.
SR_THEN = ["model.disc_layers=3"]


def _inputs() -> tuple[Volume, Volume]:
    rng = np.random.default_rng(0)
    ct = Volume(rng.normal(-300, 300, (1, 8, 8, 4)).astype(np.float32),
                make_affine((1.4, 1.4, 2.0)), source="ct")
    mr = Volume(rng.normal(0, 1, (4, 16, 16, 16)).astype(np.float32), make_affine((1, 1, 1)),
                source="mr")
    return ct, mr


def test_the_files_are_the_old_format():
    """Their presets hold the keys of both model families, as every preset dict did."""
    for name in ("revgan-sr.pt", "iunet-seg.pt"):
        model = read_payload(OLD / name)["preset"]["model"]
        assert {"depth", "scales", "blocks_per_scale", "disc_width"} <= set(model)


@pytest.mark.parametrize(("name", "preset", "overrides", "task", "channels"), [
    ("revgan-sr.pt", "demo-sr", [*SR_OVERRIDES, *SR_THEN], "sr", ("image",)),
    ("iunet-seg.pt", "demo-seg", [*SEG_OVERRIDES, *SEG_THEN], "seg",
     ("t1", "t1ce", "t2", "flair")),
])
def test_old_presets_become_the_typed_presets_of_today(name, preset, overrides, task, channels):
    checkpoint = load_checkpoint(OLD / name)
    assert checkpoint.preset == config.load_preset(preset, overrides)
    card = checkpoint.card
    assert card.task == task and card.data.channels == channels
    assert card.patch_size == (16, 16, 16) and card.infer == checkpoint.preset.infer
    assert checkpoint.epoch == 1 and card.build() is not None


def _as_before(translator, volume: Volume) -> np.ndarray:
    """What the previous version's ``Translator.translate`` did: window, then interpolate the
    windowed input, and clip the output to the window (today the input is interpolated in its
    own units and values outside the window pass through; see revmed.inference)."""
    data = translator.card.data
    image = upsample(normalise(volume.array, data.intensity, data.window), data.sr_factors,
                     data.sr_upsample)
    out = sliding_window_predict(translator.model, image, translator.card.patch_size,
                                 translator.card.infer.overlap, 1, "cpu",
                                 translator.card.infer.blend)
    return denormalise(np.clip(out, -1.0, 1.0), data.window)


def test_old_checkpoints_predict_what_they_predicted():
    """The networks of old checkpoints compute what they computed then."""
    expected = np.load(OLD / "expected.npz")
    ct, mr = _inputs()
    translator = Translator.load(OLD / "revgan-sr.pt")
    assert translator.card.kwargs.get("layers", "revmed") == translator.model.layers == "revmed"
    before = _as_before(translator, ct)
    assert before.shape == expected["sr"].shape == (1, 16, 16, 16)
    inside = (expected["sr"] > -1150) & (expected["sr"] < 350)
    assert inside.mean() > 0.1  # not only the clipped window edges
    np.testing.assert_allclose(before, expected["sr"], rtol=1e-5, atol=1e-2)
    sr = translator.translate(ct)  # today's path: the same grid, the input's full range
    np.testing.assert_allclose(sr.affine, expected["sr_affine"])
    assert sr.array.min() < -1150 and np.abs(sr.array - expected["sr"])[inside].mean() < 50
    labels = Segmenter.load(OLD / "iunet-seg.pt").segment(mr)
    assert len(np.unique(expected["seg"])) > 1
    assert np.mean(labels.array == expected["seg"]) > 0.999


def test_the_cli_runs_an_old_checkpoint(cli, tmp_path):
    ct, _ = _inputs()
    write_volume(ct, tmp_path / "ct.nii.gz")
    result = cli("infer", tmp_path / "ct.nii.gz", "-o", tmp_path / "sr.nii.gz", "--model",
                 OLD / "revgan-sr.pt", "--quiet")
    assert result.code == 0, result.err
    expected = Translator.load(OLD / "revgan-sr.pt").translate(ct).array
    np.testing.assert_allclose(read_volume(tmp_path / "sr.nii.gz").array, expected, rtol=1e-5,
                               atol=1e-2)
    assert isinstance(load_predictor(OLD / "iunet-seg.pt"), Segmenter)


def test_an_old_run_resumes(tmp_path):
    from revmed.data.synthetic import synthesize
    from revmed.engine.setup import setup_training

    synthesize("chestct-sr", tmp_path / "data", cases=3, seed=1, shape=(24, 24, 16))
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(OLD / "revgan-sr.pt", run / "last.pt")
    preset = config.load_preset("demo-sr", [*SR_OVERRIDES, *SR_THEN, "train.epochs=2"])
    trainer = setup_training(preset, tmp_path / "data", run, torch.device("cpu"), resume=True)
    assert trainer.epoch == 1
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    record = trainer.fit()
    assert record["epoch"] == 2 and np.isfinite(record["g_loss"])
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert load_checkpoint(run / "last.pt").epoch == 2
