"""Frozen normalisation statistics and tiled inference: the result of a translator does not
depend on how the volume is cut, and equals one pass over the whole volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from revmed.checkpoint import write_payload
from revmed.inference import Translator
from revmed.inference.tiles import plan_tiles, runs_in_tiles, slab_axis, tiled_predict
from revmed.io import Volume, make_affine
from revmed.models import build_model
from revmed.models.revgan import RevGAN3D
from revmed.nn.norm_statistics import (FixedNorm3d, collect_norm_statistics, freeze_norms,
                                       instance_norms)


def _network(encoder: str, seed: int = 0, layers: str = "revmed") -> RevGAN3D:
    """A RevGAN with weights far from its identity start, so every layer matters."""
    torch.manual_seed(seed)
    depth = 1 if encoder == "strided" else 2  # a halo the small test volumes can tile
    net = RevGAN3D(1, 1, width=8, depth=depth, encoder=encoder, layers=layers).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return net


def test_statistics_are_the_mean_instance_statistics_of_each_norm():
    norm = torch.nn.InstanceNorm3d(3, affine=True)
    net = torch.nn.Sequential(torch.nn.Identity(), norm)
    inputs = [torch.randn(2, 3, 4, 5, 6) * 3 + 1, torch.randn(1, 3, 6, 5, 4)]
    stats = collect_norm_statistics(net, net, inputs)
    assert set(stats) == {"1"}
    instances = [x[b].reshape(3, -1).double().numpy() for x in inputs for b in range(len(x))]
    expected_mean = np.mean([i.mean(axis=1) for i in instances], axis=0)
    expected_var = np.mean([i.var(axis=1) for i in instances], axis=0)
    assert np.allclose(stats["1"][0].numpy(), expected_mean, atol=1e-5)
    assert np.allclose(stats["1"][1].numpy(), expected_var, atol=1e-4)


@pytest.mark.parametrize("encoder,layers", [("srcnn-relu", "revmed"), ("strided", "revmed"),
                                           ("strided", "authors")])
def test_frozen_on_its_own_statistics_the_network_is_unchanged(encoder, layers):
    net = _network(encoder, layers=layers)
    x = torch.randn(1, 1, 16, 16, 16)
    for reverse in (False, True):
        run = net.reverse if reverse else net
        frozen = freeze_norms(net, collect_norm_statistics(net, run, [x]))
        frozen_run = frozen.reverse if reverse else frozen
        assert any(isinstance(m, FixedNorm3d) for m in frozen.modules())
        with torch.no_grad():
            assert torch.allclose(frozen_run(x), run(x), atol=1e-4)
    assert instance_norms(net)  # the original keeps its instance norms


def test_tiles_cover_the_volume_once_within_the_budget():
    shape, halo = (37, 30, 23), 4
    for budget, align in ((3000, 1), (6000, 2), (10**9, 2)):
        tiles = plan_tiles(shape, halo, budget, align)
        count = np.zeros(shape, dtype=int)
        for tile in tiles:
            count[tile.target] += 1
            assert all(t.start % align == 0 for t in tile.target)
            read = [s.stop - s.start for s in tile.source]
            assert all(s.start <= t.start - min(halo, t.start) for s, t in
                       zip(tile.source, tile.target))
            assert np.prod(read) <= budget or len(tiles) > 1
        assert np.all(count == 1)
    assert len(plan_tiles(shape, halo, 10**9)) == 1
    (whole,) = plan_tiles(shape, halo, 10**9)
    assert [s.stop - s.start for s in whole.source] == list(shape)


@pytest.mark.parametrize("encoder,layers", [("srcnn-relu", "revmed"), ("strided", "revmed"),
                                           ("strided", "authors")])
def test_tiled_output_does_not_depend_on_the_tiles(encoder, layers):
    net = _network(encoder, seed=1, layers=layers)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 46, 38, 29)).astype(np.float32)
    for reverse in (False, True):
        run = net.reverse if reverse else net
        frozen = freeze_norms(net, collect_norm_statistics(
            net, run, [torch.from_numpy(image[None, :, :16, :16, :16])]))
        frozen_run = frozen.reverse if reverse else frozen
        halo = net.halo(reverse)
        with torch.no_grad():
            whole = frozen_run(torch.from_numpy(image)[None])[0].numpy()
        for budget in (40_000, 25_000):
            tiles = plan_tiles(image.shape[1:], halo, budget, net.stride)
            assert len(tiles) > 1
            out = tiled_predict(frozen_run, image, tiles)
            assert np.allclose(out, whole, atol=1e-5), (reverse, budget)
        # the test can fail: a halo short of the network's reach leaves seams
        short = plan_tiles(image.shape[1:], halo - 2 * net.stride, 25_000, net.stride)
        assert not np.allclose(tiled_predict(frozen_run, image, short), whole, atol=1e-3)


@pytest.mark.parametrize("channels_last", [False, True])
def test_slabs_run_each_one_voxel_slab_alone(channels_last):
    """A network trained on patches one voxel thin along an axis runs in slabs along it: the
    output equals the frozen network run on each slab by itself, which a 3D pass does not."""
    net = _network("srcnn-relu", seed=2)
    rng = np.random.default_rng(3)
    image = rng.normal(size=(1, 9, 30, 26)).astype(np.float32)
    frozen = freeze_norms(net, collect_norm_statistics(
        net, net, [torch.from_numpy(image[None, :, :1, :16, :16])]))
    with torch.no_grad():
        whole = frozen(torch.from_numpy(image)[None])[0].numpy()
    for axis in range(3):
        alone = []
        for i in range(image.shape[1 + axis]):
            index = [slice(None)] * 4
            index[1 + axis] = slice(i, i + 1)
            with torch.no_grad():
                alone.append(frozen(torch.from_numpy(image[tuple(index)].copy())[None])[0])
        expected = torch.cat(alone, dim=1 + axis).numpy()
        for budget in (10**9, 2_000):
            tiles = plan_tiles(image.shape[1:], net.halo(), budget, slabs=axis)
            assert all(t.source[axis] == t.target[axis] for t in tiles)  # no halo across
            assert (len(tiles) > 1) == (budget < 10**9)
            out = tiled_predict(frozen, image, tiles, channels_last=channels_last, slabs=axis)
            assert np.allclose(out, expected, atol=1e-5), (axis, budget)
        assert not np.allclose(expected, whole, atol=1e-3)  # the test can fail


def test_slab_axis_of_a_patch():
    assert slab_axis((16, 16, 16)) is None and slab_axis((16, 1, 16)) == 1
    assert runs_in_tiles((1, 64, 64)) and not runs_in_tiles((1, 1, 64))


def _checkpoint(path, statistics: bool, patch_size=(16, 16, 16)):
    kwargs = {"in_channels": 1, "out_channels": 1, "width": 8, "depth": 2, "residual": True}
    net = build_model("revgan3d", **kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.1)
    state = {"generator": net.state_dict()}
    if statistics:
        x = [torch.rand(1, 1, 16, 16, 16) * 2 - 1]
        state["norm_statistics"] = {
            "forward": collect_norm_statistics(net, net, x),
            "reverse": collect_norm_statistics(net, net.reverse, x)}
    data = {"in_channels": 1, "out_channels": 1, "intensity": "window",
            "window": [-1150.0, 350.0], "sr_factors": [1, 1, 1], "sr_upsample": "bspline",
            "channels": []}
    return write_payload(path, {
        "model": {"kind": "revgan3d", "kwargs": kwargs}, "data": data,
        "patch_size": list(patch_size), "preset": {"task": "da", "infer": {"overlap": 0.5}},
        "state": state})


def _volume(seed=0):
    rng = np.random.default_rng(seed)
    array = rng.uniform(-1100, 300, size=(1, 40, 36, 30)).astype(np.float32)
    return Volume(array, make_affine((0.8, 0.8, 1.5)), source="ct.nii.gz")


def test_a_checkpoint_with_statistics_runs_in_tiles_whatever_their_size(tmp_path, monkeypatch):
    translator = Translator.load(_checkpoint(tmp_path / "m.pt", statistics=True))
    assert set(translator.tiled) == {False, True}
    volume = _volume()
    for reverse in (False, True):
        one = translator.translate(volume, reverse=reverse)
        monkeypatch.setattr("revmed.inference.tiles.MAX_TILE_VOXELS", 12_000)
        calls = []
        many = translator.translate(volume, reverse=reverse,
                                    progress=lambda done, total: calls.append((done, total)))
        monkeypatch.undo()
        assert len(calls) > 1 and calls[-1][0] == calls[-1][1]
        assert np.allclose(one.array, many.array, atol=1e-3)  # HU
        windows = translator.translate(volume, reverse=reverse, tiling="windows")
        assert not np.allclose(one.array, windows.array, atol=1e-3)


def test_a_checkpoint_of_one_voxel_thin_patches_changes_only_the_slab_that_changed(tmp_path):
    """Trained on patches one voxel thin along j, a translator runs each j slab alone: a
    change in one slab of the input changes no other slab of the output (with 3D patches it
    does); patches thin along two axes run in blended windows."""
    volume = _volume(2)
    changed = volume.array.copy()
    changed[:, :, 17] += 200.0
    changed = volume.with_array(changed)
    for patch, alone in (((16, 1, 16), True), ((16, 16, 16), False)):
        translator = Translator.load(_checkpoint(tmp_path / "m.pt", True, patch))
        assert set(translator.tiled) == {False, True}
        before, after = (translator.translate(v).array for v in (volume, changed))
        others = np.delete(np.abs(after - before), 17, axis=2)
        assert (others.max() < 1e-3) == alone, patch
    translator = Translator.load(_checkpoint(tmp_path / "m.pt", True, (1, 1, 16)))
    assert translator.tiled == {}


def test_a_checkpoint_without_statistics_runs_in_blended_windows(tmp_path):
    translator = Translator.load(_checkpoint(tmp_path / "old.pt", statistics=False))
    assert translator.tiled == {}
    volume = _volume(1)
    assert np.array_equal(translator.translate(volume).array,
                          translator.translate(volume, tiling="windows").array)


def test_calibration_measures_each_direction_with_the_weights_after_the_epoch():
    """``TrainingStep.calibrate`` gives the statistics of F on X patches and of G on Y patches
    measured directly with the weights as they are, on at most ``CALIBRATION_PATCHES`` of
    each; a domain without patches leaves none."""
    from revmed import config
    from revmed.engine.setup import build_training_step
    from revmed.engine.step import CALIBRATION_PATCHES

    preset = config.load_preset("demo-sr", ["model.width=8", "model.depth=1",
                                            "train.batch_size=3"])
    step = build_training_step(preset, torch.device("cpu"))
    net = step.model
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    rng = np.random.default_rng(0)
    count = CALIBRATION_PATCHES + 5
    patches = {"X": rng.normal(size=(count, 1, 8, 8, 8)).astype(np.float32),
               "Y": (rng.normal(size=(7, 1, 8, 8, 8)) * 2 + 1).astype(np.float32)}
    step.calibrate(patches, epoch=3)
    found = step.norm_statistics
    assert net.training  # left in training mode
    chosen = np.sort(np.random.default_rng([preset.train.seed, 3]).permutation(count)
                     [:CALIBRATION_PATCHES])
    expected = {"forward": collect_norm_statistics(net, net, [torch.from_numpy(
                    patches["X"][chosen])]),
                "reverse": collect_norm_statistics(net, net.reverse, [torch.from_numpy(
                    patches["Y"])])}
    for key in ("forward", "reverse"):
        assert set(found[key]) == net.norm_names(key == "reverse")
        for name, value in expected[key].items():
            assert torch.allclose(found[key][name], value, atol=1e-5), (key, name)
    everything = collect_norm_statistics(net, net, [torch.from_numpy(patches["X"])])
    assert any(not torch.allclose(found["forward"][n], v, atol=1e-5)
               for n, v in everything.items())  # only the drawn patches count
    step.calibrate({"X": patches["X"]}, epoch=4)
    assert step.norm_statistics is None


def test_tiles_run_fused_and_channels_last_on_the_cpu_with_the_plain_networks_result(tmp_path):
    """The default tiled path (``revmed.inference.fused``, channels-last) gives the output of
    the frozen network as built, run on the whole volume at once in the contiguous order."""
    from revmed.checkpoint import load_checkpoint
    from revmed.inference.fused import FusedConv3d
    from revmed.inference.predictor import frozen_directions
    from revmed.transforms import normalise

    path = _checkpoint(tmp_path / "m.pt", statistics=True)
    translator = Translator.load(path)
    assert translator.tiles_channels_last and not translator.channels_last
    assert any(isinstance(m, FusedConv3d) for m in translator.tiled[False][0].modules())
    checkpoint = load_checkpoint(path)
    model = checkpoint.card.build()
    model.load_state_dict(checkpoint.state["generator"])
    plain = frozen_directions(model, checkpoint, path)
    volume = _volume(2)
    data = checkpoint.card.data
    image = torch.from_numpy(normalise(volume.array, data.intensity, data.window))[None]
    for reverse in (False, True):
        net = plain[reverse][0].eval()
        with torch.no_grad():
            expected = (net.reverse if reverse else net)(image)[0].numpy()
        got = translator._tiles(reverse, image[0].numpy(), None, None, held=0)
        assert np.abs(got - expected).max() < 1e-5, reverse
    unordered = Translator.load(path, channels_last=False)
    assert not unordered.tiles_channels_last


def test_low_precision_without_onednn_support_runs_fp32_with_a_warning(monkeypatch):
    from revmed import runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "onednn_supports", lambda dtype: dtype == torch.float32)
    with pytest.warns(UserWarning, match="bf16.*running fp32"):
        assert runtime.inference_precision("bf16", cpu) == "fp32"
    assert runtime.inference_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(runtime, "onednn_supports", lambda dtype: True)
    assert runtime.inference_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(runtime, "onednn_supports", lambda dtype: False)
    assert runtime.inference_precision("bf16", torch.device("cuda")) == "bf16"
