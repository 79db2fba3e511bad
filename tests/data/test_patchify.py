"""patchify: the foreground rule, padding, X/Y alignment, shards + manifest, resume, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from revmed import config
from revmed.data.patchify import extract_patches, patchify, read_manifest, read_shards
from revmed.data.samples import load_sample
from revmed.data.layout import load_dataset
from revmed.data.synthetic import synthesize
from revmed.errors import InputError, OutputError


def _corner_sample(shape=(24, 24, 24), corner=8):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape)
    mask = np.zeros((1, *shape), dtype=np.uint8)
    mask[:, :corner, :corner, :corner] = 1
    return {"X": x, "Y": -x, "mask": mask}


def test_random_patches_obey_the_foreground_rule_and_stay_aligned():
    sample = _corner_sample()
    patches = extract_patches(sample, (8, 8, 8), "random", per_volume=5, min_foreground=0.3,
                              seed=1)
    n = patches["X"].shape[0]
    assert 1 <= n <= 5 and patches["X"].shape[1:] == (1, 8, 8, 8)
    assert all(patches["mask"][i].mean() >= 0.3 for i in range(n))
    np.testing.assert_array_equal(patches["Y"], -patches["X"])  # same crop for every key
    for patch in patches["X"][:, 0]:  # each patch is a real crop of the volume
        i, j, k = np.unravel_index(int(patch[0, 0, 0]), (24, 24, 24))
        np.testing.assert_array_equal(patch, sample["X"][0, i:i + 8, j:j + 8, k:k + 8])
    everything = extract_patches(sample, (8, 8, 8), "random", per_volume=5, seed=1)
    assert everything["X"].shape[0] == 5  # without the rule, all wanted patches come back


def test_grid_patches_tile_the_volume_and_drop_empty_tiles():
    sample = _corner_sample()
    all_tiles = extract_patches(sample, (8, 8, 8), "grid")
    assert all_tiles["X"].shape[0] == 27
    kept = extract_patches(sample, (8, 8, 8), "grid", min_foreground=0.01)
    assert kept["X"].shape[0] == 1
    np.testing.assert_array_equal(kept["X"][0], sample["X"][:, :8, :8, :8])


def test_small_volume_is_padded_with_the_minimum_not_refused():
    sample = {"X": np.full((1, 4, 10, 10), 5.0, np.float32),
              "mask": np.ones((1, 4, 10, 10), np.uint8)}
    sample["X"][0, 0] = -1.0
    patches = extract_patches(sample, (8, 8, 8), "random", per_volume=2)
    assert patches["X"].shape == (2, 1, 8, 8, 8)
    assert patches["X"].min() == -1.0 and (patches["X"] == -1.0).sum() > 64  # padded with -1


@pytest.fixture(scope="module")
def sr_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr") / "data"
    synthesize("chestct-sr", root, cases=4, seed=3, shape=(32, 32, 24))
    return root


def _preset(*overrides):
    return config.load_preset("demo-sr", ["patch.size=[16,16,16]", "patch.per_volume=3",
                                          *overrides])


def test_patchify_writes_shards_that_training_can_read(sr_data, tmp_path):
    preset = _preset()
    out = tmp_path / "patches"
    manifest = patchify(sr_data, out, preset)
    assert manifest == read_manifest(out) and manifest["complete"]
    again, patches = read_shards(out)
    assert again == manifest and set(patches) == {"X", "Y", "mask"}
    count = len(patches["X"])
    assert count == manifest["patches"] == sum(s["patches"] for s in manifest["shards"])
    assert 0 < count <= 3 * len(load_dataset(sr_data).splits["train"])
    item = {key: array[0] for key, array in patches.items()}
    assert item["X"].shape == (1, 16, 16, 16)
    # X is the simulated low-resolution view of the very same crop as Y
    case = load_dataset(sr_data).splits["train"][0]
    full = load_sample(case, "hr-only", preset.data)
    y, x = item["Y"][0], item["X"][0]
    hits = [(i, j, k) for i in range(17) for j in range(17) for k in range(9)
            if np.array_equal(full["Y"][0, i:i + 16, j:j + 16, k:k + 16], y)]
    assert len(hits) == 1
    i, j, k = hits[0]
    np.testing.assert_array_equal(full["X"][0, i:i + 16, j:j + 16, k:k + 16], x)
    assert not np.array_equal(x, y)
    assert item["Y"].min() >= -1 and item["Y"].max() <= 1  # HU window applied


def test_rerun_skips_done_cases_and_finishes_the_rest(sr_data, tmp_path):
    preset, out = _preset(), tmp_path / "patches"
    patchify(sr_data, out, preset)
    shards = sorted((out / "shards").glob("*.npz"))
    before = {p.name: p.read_bytes() for p in shards}
    kept_mtime = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    patchify(sr_data, out, preset)
    assert shards[0].stat().st_mtime_ns == kept_mtime  # not redone
    assert {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.npz"))} == before


def test_interrupted_run_leaves_no_half_written_shard(sr_data, tmp_path, monkeypatch):
    preset, out = _preset(), tmp_path / "patches"
    calls = {"n": 0}
    real_savez = np.savez

    def dying_savez(path, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:
            with open(path, "wb") as handle:
                handle.write(b"PK\x03\x04 half a shard")
            raise KeyboardInterrupt
        real_savez(path, **arrays)

    monkeypatch.setattr(np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        patchify(sr_data, out, preset)
    files = sorted(p.name for p in (out / "shards").iterdir())
    assert len(files) == 1 and files[0].endswith(".npz")  # only the finished shard, no temp
    with pytest.raises(InputError, match="not a complete"):
        read_shards(out)
    monkeypatch.setattr(np, "savez", real_savez)
    manifest = patchify(sr_data, out, preset)
    assert len(manifest["shards"]) == len(load_dataset(sr_data).splits["train"])


def test_other_settings_are_refused_unless_overwrite(sr_data, tmp_path):
    out = tmp_path / "patches"
    patchify(sr_data, out, _preset())
    with pytest.raises(OutputError, match="other settings"):
        patchify(sr_data, out, _preset("patch.per_volume=2"))
    manifest = patchify(sr_data, out, _preset("patch.per_volume=2"), overwrite=True)
    assert all(s["patches"] <= 2 for s in manifest["shards"])


def test_missing_split_and_foreign_folder_are_clear_errors(sr_data, tmp_path):
    with pytest.raises(InputError, match="split 'nope'"):
        patchify(sr_data, tmp_path / "a", _preset(), split="nope")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a patch folder"):
        patchify(sr_data, foreign, _preset())
    assert (foreign / "notes.txt").read_text() == "mine"


def test_segmentation_patches_keep_integer_labels(tmp_path):
    root = tmp_path / "brats"
    synthesize("brats-seg", root, cases=3, seed=0, shape=(32, 32, 32))
    preset = config.load_preset("demo-seg", ["patch.size=[16,16,16]"])
    patchify(root, tmp_path / "patches", preset)
    _, patches = read_shards(tmp_path / "patches")
    item = {key: array[0] for key, array in patches.items()}
    assert item["X"].shape == (4, 16, 16, 16) and item["label"].shape == (1, 16, 16, 16)
    assert set(np.unique(item["label"])) <= {0, 1, 2, 4}
    assert item["label"].dtype == np.uint8


def test_cli_patchify_json(sr_data, tmp_path, cli):
    result = cli("patchify", sr_data, tmp_path / "p", "--preset", "demo-sr",
                 "--set", "patch.size=[16,16,16]", "--json")
    assert result.code == 0
    assert json.loads(result.out)["patches"] == len(read_shards(tmp_path / "p")[1]["X"])
    missing = cli("patchify", tmp_path / "nowhere", tmp_path / "q", "--preset", "demo-sr")
    assert missing.code == 2 and "nowhere" in missing.err and not (tmp_path / "q").exists()


def test_grid_patch_larger_than_the_volume_is_refused(sr_data, tmp_path, cli):
    result = cli("patchify", sr_data, tmp_path / "p", "--preset", "demo-sr", "--set",
                 "patch.sampler='grid'", "--set", "patch.size=[48,16,16]")
    assert result.code == 2 and "Traceback" not in result.err
    assert "32x32x24" in result.err and "48x16x16" in result.err and ".nii.gz" in result.err
    assert not list((tmp_path / "p" / "shards").glob("*.npz"))


def test_label_sampler_puts_every_region_in_training_patches():
    """A tumour core of a few voxels in a corner of the volume: uniform crops rarely hold it,
    crops centred on each label in turn hold each label in about a quarter of the patches
    (background, 1, 2 and 4 drawn with equal odds), and every crop is a real crop."""
    shape = (48, 48, 48)
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape)
    label = np.zeros((1, *shape), dtype=np.uint8)
    label[:, 36:46, 36:46, 36:46] = 2     # oedema
    label[:, 39:43, 39:43, 39:43] = 4     # enhancing rim
    label[:, 40:42, 40:42, 40:42] = 1     # necrotic core: 8 voxels of 110 592
    sample = {"X": x, "label": label, "mask": np.ones((1, *shape), np.uint8)}

    def holding(patches, value):
        return float(np.mean([(p == value).any() for p in patches["label"]]))

    per_volume = 200
    balanced = extract_patches(sample, (16, 16, 16), "labels", per_volume=per_volume, seed=3)
    uniform = extract_patches(sample, (16, 16, 16), "random", per_volume=per_volume, seed=3)
    assert balanced["X"].shape == (per_volume, 1, 16, 16, 16)
    for value in (1, 2, 4):
        assert holding(balanced, value) >= 0.5, value  # centred on it, or on a neighbour
    assert holding(uniform, 1) < 0.2
    assert holding(balanced, 1) > 3 * holding(uniform, 1)
    # centred crops: a quarter of them has the necrotic core at the centre's 2x2x2 block
    centres = balanced["label"][:, 0, 7:9, 7:9, 7:9]
    assert 0.15 < np.mean([(c == 1).any() for c in centres]) < 0.5
    for patch, lab in zip(balanced["X"][:, 0], balanced["label"][:, 0]):  # aligned real crops
        i, j, k = np.unravel_index(int(patch[0, 0, 0]), shape)
        np.testing.assert_array_equal(lab, label[0, i:i + 16, j:j + 16, k:k + 16])


def test_label_sampler_needs_label_maps():
    with pytest.raises(InputError, match="label maps"):
        extract_patches(_corner_sample(), (8, 8, 8), "labels", per_volume=2)
