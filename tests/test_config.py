"""Presets: shipped values, validation errors naming the key, overrides, base chains."""

from __future__ import annotations

import pytest

from revmed import config
from revmed.errors import ConfigError

SHIPPED = {"hcp-sr", "chestct-sr", "chestct-da", "chestct-da-unpaired", "brats-seg",
           "demo-sr", "demo-da", "demo-seg"}


def test_every_shipped_preset_loads_and_round_trips_through_toml(tmp_path):
    assert SHIPPED <= set(config.preset_names())
    for name in config.preset_names():
        preset = config.load_preset(name)
        path = tmp_path / f"{name}.toml"
        path.write_text(config.to_toml(preset))
        again = config.load_preset(str(path))
        assert again == preset, name  # preset.toml names the preset, so even the name is kept


def test_papers_settings():
    hcp = config.load_preset("hcp-sr")
    assert hcp.patch.size == (24, 24, 24) and hcp.data.min_foreground == 0.01
    assert hcp.data.sr_factors == (2, 2, 2) and hcp.data.sr_upsample == "nearest"
    assert hcp.data.in_channels == hcp.data.out_channels == 6
    assert hcp.train.epochs == 20 and hcp.train.epochs_decay == 0
    sr = config.load_preset("chestct-sr")
    assert sr.patch.size == (128, 128, 128) and sr.data.sr_factors == (2, 2, 4)
    assert sr.data.window == (-1150.0, 350.0) and sr.train.epochs == 125
    da = config.load_preset("chestct-da")
    assert da.patch.size == (64, 64, 64) and da.train.lambda_l1 == 100.0
    unpaired = config.load_preset("chestct-da-unpaired")
    assert unpaired.train.objective == "unpaired" and unpaired.train.lambda_cycle == 10
    assert unpaired.patch == da.patch  # inherited from its base
    brats = config.load_preset("brats-seg")
    assert brats.patch.size == (160, 192, 128) and brats.model.scales == 5
    for preset in (hcp, sr, da):
        assert preset.train.lr == 2e-4 and preset.train.betas == (0.5, 0.999)
        assert preset.model.init_std == 0.02


@pytest.mark.parametrize("body, key", [
    ("[train]\nlearning_rate = 1e-3\n", "train.learning_rate"),
    ("colour = 'red'\n", "colour"),
    ("[patch]\nsize = [32, 32]\n", "patch.size"),
    ("[patch]\nsize = 'big'\n", "patch.size"),
    ("[train]\nepochs = 1.5\n", "train.epochs"),
    ("[train]\nepochs = 0\n", "train.epochs"),
    ("[data]\nwindow = [350.0, -1150.0]\n", "data.window"),
    ("[data]\nsr_factors = [0, 1, 1]\n", "data.sr_factors"),
    ("[model]\nresidual = 'yes'\n", "model.residual"),
    ("[model]\nwidth = 15\n", "model.width"),
    ("[model]\nscales = 3\n", "model.scales"),  # an iunet3d key on the default revgan3d
])
def test_bad_preset_file_names_file_and_key(tmp_path, body, key):
    path = tmp_path / "mine.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        config.load_preset(str(path))
    assert str(path) in str(info.value) and key in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\nlr = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load_preset(str(path))
    with pytest.raises(ConfigError, match="no such preset file"):
        config.load_preset(str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        config.load_preset("nope")


def test_overrides_parse_toml_values_and_are_validated():
    preset = config.load_preset("demo-sr", ["train.lr=1e-4", "patch.size=[16, 16, 8]",
                                            "model.residual=false", "description=my run"])
    assert preset.train.lr == 1e-4 and preset.patch.size == (16, 16, 8)
    assert preset.model.residual is False and preset.description == "my run"
    with pytest.raises(ConfigError, match="train.lr"):
        config.load_preset("demo-sr", ["train.lr=fast"])
    with pytest.raises(ConfigError, match="train.nope"):
        config.load_preset("demo-sr", ["train.nope=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.load_preset("demo-sr", ["train.lr"])
    with pytest.raises(ConfigError, match="patch.sampler.*only seg presets"):
        config.load_preset("demo-sr", ["patch.sampler=labels"])
    assert config.load_preset("demo-seg").patch.sampler == "labels"


def test_user_preset_with_base_overrides_only_what_it_states(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "chestct-sr"\n[patch]\nsize = [96, 96, 96]\n')
    mine, base = config.load_preset(str(path)), config.load_preset("chestct-sr")
    assert mine.patch.size == (96, 96, 96) and mine.name == "mine"
    assert mine.data == base.data and mine.train == base.train


def test_base_loop_is_an_error(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(f'base = "{b}"\n')
    b.write_text(f'base = "{a}"\n')
    with pytest.raises(ConfigError, match="loops"):
        config.load_preset(str(a))
