"""Preset parsing properties: overrides give back their value, presets round-trip through TOML,
and bad overrides are ConfigErrors, never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revmed import config
from revmed.errors import ConfigError
from revmed.preset import Preset

INT64 = 2**63 - 1  # TOML integers are 64-bit

_finite = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
_fraction = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
# any text, control characters included (to_toml escapes them); no lone surrogates (not UTF-8)
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)

#: key -> strategy of valid values (demo-sr is a RevGAN sr preset: model and task keys fixed)
VALID = {
    "train.lr": st.one_of(_finite, st.integers(0, INT64)),
    "train.epochs": st.integers(1, INT64),
    "train.seed": st.integers(0, 2**32 - 1),  # NumPy's and MONAI's seeds are 32-bit
    "train.betas": st.lists(_fraction, min_size=2, max_size=2),
    "patch.size": st.lists(st.integers(1, 1024), min_size=3, max_size=3),
    "patch.overlap": _fraction,
    "model.residual": st.booleans(),
    "model.width": st.integers(1, 512).map(lambda n: 2 * n),
    "data.window": st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2, unique=True).map(sorted),
    "data.sr_factors": st.lists(st.integers(1, 8), min_size=3, max_size=3),
    "description": _text,
    "data_dir": _text,
}


def _get(preset, dotted):
    """The value of a dotted key, as TOML holds it (lists, not tuples)."""
    value = preset.to_dict()
    for part in dotted.split("."):
        value = value[part]
    return value


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(sorted(VALID)), data=st.data())
def test_an_override_gives_back_its_value(key, data):
    value = data.draw(VALID[key], label="value")
    preset = config.load_preset("demo-sr", [f"{key}={config.toml_value(value)}"])
    got = _get(preset, key)
    if key == "train.lr":  # an integer learning rate becomes the nearest float
        assert type(got) is float and got == float(value)
    else:
        assert type(got) is type(value) and got == value


@settings(max_examples=25, deadline=None)
@given(values=st.fixed_dictionaries({}, optional=VALID))
def test_a_preset_round_trips_through_to_toml(values):
    preset = config.load_preset("demo-sr",
                                [f"{k}={config.toml_value(v)}" for k, v in values.items()])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "saved.toml"
        path.write_text(config.to_toml(preset), encoding="utf-8")
        assert config.load_preset(str(path)) == preset


def _refused(override):
    with pytest.raises(ConfigError):
        config.load_preset("demo-sr", [override])


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=30).filter(lambda s: "=" not in s))
def test_an_override_without_equals_is_refused(item):
    _refused(item)


_name = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)


@st.composite
def _unknown_keys(draw):
    kind = draw(st.sampled_from(["top", "section", "deep"]))
    if kind == "top":
        return draw(_name.filter(lambda n: n not in config.schema()))
    if kind == "section":
        section = draw(st.sampled_from(sorted(config.SECTIONS)))
        return f"{section}.{draw(_name.filter(lambda n: n not in config.schema()[section]))}"
    return ".".join(draw(st.lists(_name, min_size=3, max_size=4)))


@settings(max_examples=40, deadline=None)
@given(key=_unknown_keys(), value=st.sampled_from(["1", "1.5", "true", '"x"', "[1, 2, 3]", "x"]))
def test_an_unknown_key_is_refused(key, value):
    _refused(f"{key}={value}")


_scalars = st.one_of(st.booleans(), st.integers(-INT64, INT64), st.floats(), _text)

#: key -> strategy of values of the wrong type or out of range
INVALID = {
    "train.epochs": st.one_of(st.integers(-INT64, 0), st.floats(), _text, st.booleans(),
                              st.lists(st.integers(), max_size=3)),
    "train.seed": st.one_of(st.integers(-INT64, -1), st.integers(2**32, INT64), st.floats(),
                            _text, st.booleans()),
    "train.lr": st.one_of(st.floats(max_value=-1e-300), st.just(float("nan")),
                          st.just(float("inf")), _text, st.booleans(),
                          st.lists(_finite, min_size=1, max_size=2)),
    "patch.size": st.one_of(_scalars,
                            st.lists(st.integers(1, 64), max_size=6).filter(lambda v: len(v) != 3),
                            st.lists(st.integers(-5, 0), min_size=3, max_size=3),
                            st.lists(st.floats(), min_size=3, max_size=3)),
    "model.residual": st.one_of(st.integers(), st.floats(), _text),
    "data.window": st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2).map(
        lambda v: sorted(v, reverse=True)),  # must increase
    "model.width": st.integers(1, 512).map(lambda n: 2 * n - 1),  # RevGAN couplings: even
    "task": _text.filter(lambda s: s not in config.TASKS),
    "train": _scalars,  # a section needs a table
}


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(sorted(INVALID)), data=st.data())
def test_a_value_of_the_wrong_type_or_range_is_refused(key, data):
    value = data.draw(INVALID[key], label="value")
    _refused(f"{key}={config.toml_value(value)}")


_dotted = st.one_of(
    st.sampled_from([name if not isinstance(spec, dict) else f"{name}.{key}"
                     for name, spec in config.schema().items()
                     for key in (spec if isinstance(spec, dict) else [name])]),
    st.text(max_size=15))


@settings(max_examples=80, deadline=None)
@given(key=_dotted, value=st.text(max_size=25), equals=st.booleans())
def test_any_override_loads_or_is_a_config_error(key, value, equals):
    try:
        preset = config.load_preset("demo-sr", [f"{key}={value}" if equals else key + value])
    except ConfigError:
        return
    assert isinstance(preset, Preset)


def test_a_deeply_nested_value_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nested too deeply"):
        config.load_preset("demo-sr", ["train.lr=" + "[" * 5000])
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000)
    with pytest.raises(ConfigError, match="deep.toml"):
        config.load_preset(str(path))
