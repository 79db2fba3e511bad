"""`revmed train` and `revmed infer` end to end on tiny synthetic volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from revmed import config
from revmed.data.synthetic import synthesize
from revmed.checkpoint import read_payload
from revmed.inference import Translator
from revmed.io import Volume, make_affine, read_volume, write_volume
from revmed.transforms import upsample

TINY = ["patch.size=[16,16,16]", "patch.per_volume=2", "model.width=4", "model.depth=1",
        "model.disc_width=4", "model.disc_layers=2", "train.epochs=1"]


def _set(*overrides):
    return [arg for item in (*TINY, *overrides) for arg in ("--set", item)]


@pytest.fixture(scope="module")
def sr_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr") / "data"
    synthesize("chestct-sr", root, cases=3, seed=5, shape=(32, 32, 24))
    return root


@pytest.fixture(scope="module")
def trained(sr_data, tmp_path_factory):
    """A run trained for one epoch through the CLI's code path."""
    from revmed.cli.app import run
    out = tmp_path_factory.mktemp("runs") / "run"
    assert run(["train", "--preset", "demo-sr", "--data", str(sr_data), "--out", str(out),
                "--quiet", *_set()]) == 0
    return out


def test_train_writes_a_self_describing_run(trained):
    assert {p.name for p in trained.iterdir()} >= {"preset.toml", "metrics.jsonl", "last.pt",
                                                    "best.pt"}
    (record,) = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert record["epoch"] == 1 and np.isfinite(record["val_psnr"]) and 0 < record["val_ssim"] <= 1
    assert {"l1", "g_gan", "d_loss"} <= set(record)
    checkpoint = read_payload(trained / "best.pt", kind="revgan3d")
    assert checkpoint["data"]["window"] == [-1150.0, 350.0]
    assert checkpoint["data"]["sr_factors"] == [2, 2, 4]
    assert checkpoint["model"]["kwargs"]["width"] == 4 and checkpoint["revmed"]
    assert checkpoint["patch_size"] == [16, 16, 16]
    # F's and G's normalisation statistics, so inference runs in tiles
    statistics = checkpoint["state"]["norm_statistics"]
    assert set(statistics) == {"forward", "reverse"}
    assert all(s.shape[0] == 2 and torch.isfinite(s).all() and (s[1] > 0).all()
               for direction in statistics.values() for s in direction.values())
    assert set(Translator.load(trained / "best.pt").tiled) == {False, True}


def test_existing_run_is_not_overwritten_and_resume_needs_a_run(cli, sr_data, trained, tmp_path):
    before = (trained / "last.pt").read_bytes()
    again = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", trained, *_set())
    assert again.code == 2 and "--resume" in again.err
    assert (trained / "last.pt").read_bytes() == before
    nothing = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", tmp_path / "new",
                  "--resume", *_set())
    assert nothing.code == 2 and "nothing to resume" in nothing.err


def test_resumed_run_matches_an_uninterrupted_one(cli, sr_data, tmp_path):
    two = _set("train.epochs=2", "model.residual=false")
    assert cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", tmp_path / "a",
               "--quiet", *two).code == 0
    one = _set("train.epochs=1", "model.residual=false")
    assert cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", tmp_path / "b",
               "--quiet", *one).code == 0
    assert cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", tmp_path / "b",
               "--resume", "--quiet", *two).code == 0
    a = read_payload(tmp_path / "a" / "last.pt")
    b = read_payload(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state"]["generator"].items():
        torch.testing.assert_close(b["state"]["generator"][key], value, rtol=1e-5, atol=1e-6)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 2


def _oblique_lr(tmp_path, shape=(10, 12, 5)):
    rotation = np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    affine = make_affine([1.4, 1.6, 4.0], rotation, [12.0, -30.0, 40.0])
    rng = np.random.default_rng(0)
    array = rng.uniform(-1000, 300, size=(1, *shape)).astype(np.float32)
    return write_volume(Volume(array, affine), tmp_path / "lr.nii.gz")


def _corners(affine, shape):
    return (affine @ [-0.5, -0.5, -0.5, 1])[:3], (affine @ ([s - 0.5 for s in shape] + [1]))[:3]


def test_infer_refines_the_grid_over_the_same_extent(cli, trained, tmp_path):
    lr_path = _oblique_lr(tmp_path)
    result = cli("infer", lr_path, "-o", tmp_path / "sr.nii.gz", "--model", trained / "best.pt",
                 "--quiet")
    assert result.code == 0, result.err
    lr, sr = read_volume(lr_path), read_volume(tmp_path / "sr.nii.gz")
    assert sr.shape == (20, 24, 20)
    np.testing.assert_allclose(sr.spacing, [0.7, 0.8, 1.0], atol=1e-5)
    np.testing.assert_allclose(sr.direction, lr.direction, atol=1e-6)
    for a, b in zip(_corners(lr.affine, lr.shape), _corners(sr.affine, sr.shape)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # back in HU: the network's window, and what lies outside it passes through from the
    # interpolated input (B-spline overshoot below -1150 HU here)
    upsampled = upsample(lr.array, [2, 2, 4], "bspline")
    outside = (upsampled < -1150) | (upsampled > 350)
    assert outside.any()
    np.testing.assert_allclose(sr.array[outside], upsampled[outside], atol=1e-3)
    assert sr.array[~outside].min() >= -1150 and sr.array[~outside].max() <= 350
    assert sr.array.std() > 10
    back = cli("infer", tmp_path / "sr.nii.gz", "-o", tmp_path / "lr_again.nii.gz",
               "--model", trained / "best.pt", "--reverse", "--quiet")
    assert back.code == 0, back.err
    again = read_volume(tmp_path / "lr_again.nii.gz")
    assert again.shape == lr.shape
    np.testing.assert_allclose(again.affine, lr.affine, atol=1e-4)


def test_infer_folder_env_model_and_refusals(cli, trained, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        _oblique_lr(tmp_path).rename(folder / f"{name}.nii.gz")
    monkeypatch.setenv("REVMED_MODEL", str(trained / "best.pt"))
    result = cli("infer", folder, "-o", tmp_path / "out")  # --quiet would silence the note
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert str(trained / "best.pt") in result.err  # says which model it used
    exists = cli("infer", folder, "-o", tmp_path / "out", "--quiet")
    assert exists.code == 2 and "--overwrite" in exists.err
    assert cli("infer", folder, "-o", tmp_path / "out", "--overwrite", "--quiet").code == 0
    six = Volume(np.zeros((6, 8, 8, 8), np.float32), np.eye(4))
    wrong = write_volume(six, tmp_path / "six.nii.gz")
    bad = cli("infer", wrong, "-o", tmp_path / "x.nii.gz", "--quiet")
    assert bad.code == 2 and "six.nii.gz" in bad.err and "channel" in bad.err
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("preset, task, shape, extra", [
    ("chestct-da", "chestct-da", (24, 24, 24), ["train.lambda_gan=0"]),
    ("chestct-da-unpaired", "chestct-da", (24, 24, 24), ["train.pool_size=2"]),
    ("hcp-sr", "hcp-sr", (24, 24, 24), ["patch.size=[12,12,12]", "model.disc_layers=1"]),
    ("chestct-da-strided", "chestct-da", (24, 24, 24), ["train.epochs_decay=0"]),
    ("chestct-sr-strided", "chestct-sr", (24, 24, 32), ["train.epochs_decay=0"]),
])
def test_each_revgan_preset_trains_and_infers_on_its_synthetic_data(cli, tmp_path, preset, task,
                                                                     shape, extra):
    data = tmp_path / "data"
    synthesize(task, data, cases=3, seed=1, shape=shape)
    run_dir = tmp_path / "run"
    result = cli("train", "--preset", preset, "--data", data, "--out", run_dir, "--quiet",
                 "--json", *_set(*extra))
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["epoch"] == 1 and np.isfinite(record["g_loss"])
    test_case = sorted((data / "test").glob("*/*.nii.gz"))[0]
    out = tmp_path / "out.nii.gz"
    assert cli("infer", test_case, "-o", out, "--model", run_dir / "best.pt", "--quiet").code == 0
    source, result_volume = read_volume(test_case), read_volume(out)
    factors = config.load_preset(preset).data.sr_factors if preset.endswith("sr") or \
        preset == "chestct-sr-strided" else (1, 1, 1)
    assert result_volume.channels == source.channels
    assert result_volume.shape == tuple(s * f for s, f in zip(source.shape, factors))


def test_resume_refuses_a_different_run_but_may_train_longer(cli, sr_data, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
               *_set()).code == 0
    before = (run / "last.pt").read_bytes()
    other = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--resume",
                "--quiet", *_set("model.width=6", "train.epochs=2"))
    assert other.code == 2 and "model.width = 4, not 6" in other.err
    assert "preset.toml" in other.err and (run / "last.pt").read_bytes() == before
    longer = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--resume",
                 "--quiet", *_set("train.epochs=2", "train.time_limit=600"))
    assert longer.code == 0, longer.err
    assert read_payload(run / "last.pt")["epoch"] == 2
