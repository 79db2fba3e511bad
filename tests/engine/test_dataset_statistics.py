"""``data.intensity = "zscore-dataset"`` (the hcp-sr preset): per-channel statistics measured on
the train split, kept in the preset and checkpoint, and inverted exactly on output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from revmed import config
from revmed.checkpoint import load_checkpoint
from revmed.data.layout import load_dataset
from revmed.data.patchify import patchify
from revmed.data.statistics import channel_statistics
from revmed.data.synthetic import synthesize
from revmed.engine.setup import setup_training
from revmed.errors import ConfigError, InputError
from revmed.inference import load_predictor
from revmed.io import Volume, make_affine, read_volume
from revmed.transforms import from_zscores, normalise, upsample

#: hcp-sr shrunk to a few seconds: 12^3 patches, an 8-wide core of one block, one epoch.
TINY = ["patch.size=[12,12,12]", "patch.sampler='random'", "patch.per_volume=2",
        "model.width=8", "model.depth=1", "model.disc_width=4", "model.disc_layers=1",
        "train.batch_size=2", "train.epochs=1", "train.time_limit=0"]


@pytest.fixture(scope="module")
def dti(tmp_path_factory):
    """A 5-case synthetic diffusion-tensor dataset (6 channels, brain masks), 16^3."""
    root = tmp_path_factory.mktemp("dti") / "data"
    synthesize("hcp-sr", root, cases=5, seed=2, shape=(16, 16, 16))
    return root


def reference_statistics(root):
    """Per-channel mean and std of the train split inside the masks, by plain numpy."""
    cases = load_dataset(root).splits["train"]
    voxels = np.concatenate(
        [read_volume(c.target).array[:, read_volume(c.mask).array[0] > 0] for c in cases], axis=1)
    return voxels.astype(np.float64).mean(axis=1), voxels.astype(np.float64).std(axis=1)


def test_statistics_are_the_masked_mean_and_std_of_the_train_split(dti):
    cases = load_dataset(dti).splits["train"]
    mean, std = channel_statistics([(c.target, c.mask) for c in cases])
    want_mean, want_std = reference_statistics(dti)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std, want_std, rtol=1e-9)
    # the off-diagonal components are far smaller than the diagonal ones: what one window hurts
    assert std[1] < 0.5 * std[0]


def test_zscores_invert_exactly_and_are_not_clipped():
    rng = np.random.default_rng(0)
    array = rng.normal(0.0, 1.0, (3, 4, 5, 6)).astype(np.float32) * [[[[1]]], [[[20]]], [[[0.01]]]]
    stats = ([0.5, -3.0, 0.0], [2.0, 7.0, 0.004])
    z = normalise(array, "zscore-dataset", (0, 1), stats)
    np.testing.assert_allclose(z[1], (array[1] + 3.0) / 7.0, rtol=1e-5)
    assert np.abs(z).max() > 1.5  # nothing squeezed into [-1, 1]
    np.testing.assert_allclose(from_zscores(z, stats), array, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one mean and std per channel"):
        normalise(array, "zscore-dataset", (0, 1), ([0.0], [1.0]))


def test_training_keeps_the_statistics_and_inference_maps_back_without_clipping(dti, tmp_path):
    # lr 0 and the residual option: the network stays what it starts as, the interpolated
    # input, so the output in file units must equal the interpolated input exactly; a window
    # mapping would have clipped it and squeezed the off-diagonal components.
    run = tmp_path / "run"
    preset = config.load_preset("hcp-sr", [*TINY, "model.residual=true", "train.lr=0"])
    assert preset.data.input_mean == ()
    trainer = setup_training(preset, dti, run, torch.device("cpu"))
    trainer.fit()
    want_mean, want_std = reference_statistics(dti)
    saved = load_checkpoint(run / "best.pt")
    for name, want in (("input_mean", want_mean), ("input_std", want_std),
                       ("output_mean", want_mean), ("output_std", want_std)):
        np.testing.assert_allclose(getattr(saved.card.data, name), want, rtol=1e-6)
        np.testing.assert_allclose(getattr(saved.preset.data, name), want, rtol=1e-6)
    assert "output_std = [" in (run / "preset.toml").read_text()

    rng = np.random.default_rng(1)
    low = rng.normal(0.0, 3.0, (6, 6, 6, 6)).astype(np.float32)  # far outside any window
    out = load_predictor(run / "best.pt").predict(Volume(low, make_affine([2.5, 2.5, 2.5])))
    expected = upsample(low, (2, 2, 2), "nearest")
    np.testing.assert_allclose(out.array, expected, rtol=1e-4, atol=1e-4)


def test_patch_folders_carry_the_statistics(dti, tmp_path):
    preset = config.load_preset("hcp-sr", TINY)
    manifest = patchify(dti, tmp_path / "patches", preset)
    want_mean, _ = reference_statistics(dti)
    np.testing.assert_allclose(manifest["statistics"]["output_mean"], want_mean, rtol=1e-6)
    run = tmp_path / "run"
    setup_training(preset, tmp_path / "patches", run, torch.device("cpu")).fit()
    card = load_checkpoint(run / "last.pt").card.data
    np.testing.assert_allclose(card.input_mean, want_mean, rtol=1e-6)
    # a patch folder made with a window has none: refused, not trained on wrong values
    window = config.load_preset("hcp-sr", [*TINY, "data.intensity='window'",
                                           "data.window=[-3.5,3.5]"])
    patchify(dti, tmp_path / "windowed", window)
    manifest = json.loads((tmp_path / "windowed" / "manifest.json").read_text())
    assert "statistics" not in manifest
    with pytest.raises(InputError, match="patchify"):
        setup_training(preset, tmp_path / "windowed", tmp_path / "run2", torch.device("cpu"))


@pytest.mark.parametrize("override, message", [
    ("data.output_mean=[0.0, 1.0]", "2 value"),
    ("data.input_std=[1.0, 1.0, 0.0, 1.0, 1.0, 1.0]", "above 0"),
])
def test_statistics_keys_are_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load_preset("hcp-sr", [override])


def test_segmentation_presets_refuse_dataset_zscores():
    with pytest.raises(ConfigError, match="segmentation uses 'zscore'"):
        config.load_preset("demo-seg", ["data.intensity='zscore-dataset'"])


def test_a_tanh_output_cannot_carry_zscores(dti, tmp_path):
    preset = config.load_preset("hcp-sr", [*TINY, "model.encoder='strided'",
                                           "patch.size=[16,16,16]"])
    with pytest.raises(ConfigError, match="tanh"):
        setup_training(preset, dti, tmp_path / "run", torch.device("cpu"))
