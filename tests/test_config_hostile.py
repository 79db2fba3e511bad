"""Preset values that used to pass the checks and fail later (or escape the runs folder), and
preset files as editors and folders really hold them."""

from __future__ import annotations

import os

import pytest

from revmed import config
from revmed.errors import ConfigError


def test_a_seed_beyond_32_bits_is_refused_when_read(cli, tmp_path):
    with pytest.raises(ConfigError, match=r"train.seed.*at most 4294967295, got 4294967296"):
        config.load_preset("demo-sr", ["train.seed=4294967296"])
    assert config.load_preset("demo-sr", ["train.seed=4294967295"]).train.seed == 2**32 - 1
    result = cli("train", "--preset", "demo-sr", "--data", tmp_path / "nowhere", "--out",
                 tmp_path / "run", "--seed", "4294967296")
    assert result.code == 2 and "train.seed" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_largest_seed_cuts_patches(tmp_path):
    from revmed.data.patchify import patchify
    from revmed.data.synthetic import synthesize

    synthesize("chestct-sr", tmp_path / "data", cases=3, seed=0, shape=(16, 16, 12))
    preset = config.load_preset("demo-sr", ["patch.size=[8,8,8]", "patch.per_volume=2",
                                            "train.seed=4294967295"])
    manifest = patchify(tmp_path / "data", tmp_path / "patches", preset)
    assert manifest["patches"] == 2


@pytest.mark.parametrize(("item", "key"), [
    ("data.sr_factors=[1000000,1,1]", "data.sr_factors"),
    ("patch.size=[100000,64,64]", "patch.size"),
])
def test_sizes_that_can_only_exhaust_memory_are_refused(item, key):
    with pytest.raises(ConfigError, match=key + ".*must be at most"):
        config.load_preset("chestct-sr", [item])


@pytest.mark.parametrize("name", ["../../escaped", "/abs/olute", "a\\b", "..", "x\ny"])
def test_a_preset_name_must_be_a_plain_name(tmp_path, name):
    path = tmp_path / "mine.toml"
    path.write_text(f'base = "demo-sr"\nname = {config.toml_value(name)}\n')
    with pytest.raises(ConfigError, match="key 'name': must be a plain name"):
        config.load_preset(str(path))


def test_a_relative_base_is_read_from_the_folder_of_the_preset(tmp_path, monkeypatch):
    shared = tmp_path / "presets"
    (shared / "site").mkdir(parents=True)
    (shared / "site.toml").write_text('base = "demo-sr"\n[train]\nepochs = 7\n')
    (shared / "site" / "mine.toml").write_text('base = "../site.toml"\n[train]\nlr = 1e-3\n')
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    (elsewhere / "site.toml").write_text('base = "demo-sr"\n[train]\nepochs = 99\n')
    monkeypatch.chdir(elsewhere)  # a base read from here would be the wrong one
    preset = config.load_preset(str(shared / "site" / "mine.toml"))
    assert (preset.train.epochs, preset.train.lr) == (7, 1e-3)
    monkeypatch.chdir(shared / "site")
    assert config.load_preset("mine.toml").train.epochs == 7  # a relative path to the file
    # loops are still found, however the files are named
    (shared / "a.toml").write_text('base = "b.toml"\n')
    (shared / "b.toml").write_text(f'base = "{os.path.join("..", "presets", "a.toml")}"\n')
    with pytest.raises(ConfigError, match="loops"):
        config.load_preset(str(shared / "a.toml"))


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    path = tmp_path / "windows.toml"
    path.write_bytes("\ufeffbase = \"demo-sr\"\n[train]\nepochs = 3\n".encode("utf-8"))
    assert config.load_preset(str(path)).train.epochs == 3
