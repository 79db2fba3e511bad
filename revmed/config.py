"""Presets: TOML files that hold a task's settings, validated on load.

A preset is a TOML document with a few top-level keys and the sections ``data``, ``patch``,
``model``, ``train`` and ``infer``. Every key has a type and a default in ``SCHEMA``; unknown
keys and wrong types are ``ConfigError``s that name the key and the file. A preset may name a
``base`` preset whose values it overrides, so the ``demo-*`` presets only state what differs.

The resolved preset is a plain nested dict (``preset["train"]["lr"]``). Library functions take
the values they need as arguments; only the CLI and the registry read the whole dict.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from revmed.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib  # type: ignore[no-redef]

Checker = Callable[[Any], Any]


# --- value checkers: each returns the (coerced) value or raises ValueError with a reason ------

def _text(choices: Iterable[str] | None = None) -> Checker:
    allowed = tuple(choices) if choices else None

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_kind(value)}")
        if allowed and value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}; got {value!r}")
        return value

    check.describe = "string" if not allowed else "one of " + ", ".join(repr(a) for a in allowed)  # type: ignore[attr-defined]
    return check


def _integer(minimum: int | None = None) -> Checker:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    check.describe = "integer" if minimum is None else f"integer >= {minimum}"  # type: ignore[attr-defined]
    return check


def _number(minimum: float | None = None, maximum: float | None = None,
            open_max: bool = False) -> Checker:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_kind(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"must be finite, got {value}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and (value > maximum or (open_max and value == maximum)):
            raise ValueError(f"must be {'below' if open_max else 'at most'} {maximum}, got {value}")
        return value

    check.describe = "number"  # type: ignore[attr-defined]
    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


_flag.describe = "true or false"  # type: ignore[attr-defined]


def _sequence(item: Checker, length: int, ordered: bool = False) -> Checker:
    def check(value: Any) -> list:
        if not isinstance(value, list):
            raise ValueError(f"expected a list of {length}, got {_kind(value)}")
        if len(value) != length:
            raise ValueError(f"expected {length} values, got {len(value)}")
        items = [item(v) for v in value]
        if ordered and not all(a < b for a, b in zip(items, items[1:], strict=False)):
            raise ValueError(f"values must increase, got {items}")
        return items

    check.describe = f"list of {length} {getattr(item, 'describe', 'values')}"  # type: ignore[attr-defined]
    return check


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


# --- the schema --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Key:
    """One preset key: how to check it, its default and a one-line meaning."""

    check: Checker
    default: Any
    help: str


TASKS = ("sr", "da", "seg")
SYNTH_TASKS = ("chestct-sr", "chestct-da", "hcp-sr", "brats-seg")

#: ``--precision`` values; see ``revmed.precision``.
PRECISIONS = ("fp32", "bf16", "fp16")

SCHEMA: dict[str, dict[str, Key] | Key] = {
    "name": Key(_text(), "", "preset name (defaults to the file name)"),
    "description": Key(_text(), "", "one line saying what the preset is for"),
    "base": Key(_text(), "", "preset whose values this one starts from"),
    "task": Key(_text(TASKS), "sr", "sr (super-resolution), da (domain adaptation) or seg"),
    "data_dir": Key(_text(), "data", "default dataset folder (relative to the working directory)"),
    "synth": Key(_text(("",) + SYNTH_TASKS), "", "`revmed synth` task that makes matching data"),
    "data": {
        "in_channels": Key(_integer(1), 1, "channels of the network input"),
        "out_channels": Key(_integer(1), 1, "channels of the network output"),
        "intensity": Key(_text(("window", "zscore")), "window",
                         "window: clip to `window` and map linearly to [-1, 1]; zscore: per "
                         "channel, inside the foreground"),
        "window": Key(_sequence(_number(), 2, ordered=True), [-1150.0, 350.0],
                      "intensity range mapped to [-1, 1] (HU for CT)"),
        "sr_factors": Key(_sequence(_integer(1), 3), [1, 1, 1],
                          "super-resolution factor per voxel axis (i, j, k); 1 = none"),
        "sr_upsample": Key(_text(("bspline", "trilinear", "nearest")), "bspline",
                           "how the low-resolution input is put on the output grid"),
        "foreground_above": Key(_number(), -0.99,
                                "normalised value above which a voxel is foreground "
                                "(used when the dataset has no masks)"),
        "min_foreground": Key(_number(0.0, 1.0), 0.0,
                              "patches with a smaller foreground fraction are dropped"),
    },
    "patch": {
        "size": Key(_sequence(_integer(1), 3), [64, 64, 64], "patch size per voxel axis"),
        "sampler": Key(_text(("random", "grid")), "random", "random crops or a regular grid"),
        "per_volume": Key(_integer(1), 8, "random crops drawn per volume"),
        "overlap": Key(_number(0.0, 1.0, open_max=True), 0.0, "grid patch overlap fraction"),
    },
    "model": {
        "kind": Key(_text(("revgan3d", "iunet3d")), "revgan3d", "model family"),
        "width": Key(_integer(2), 32, "channels inside the network (even: couplings split them)"),
        "depth": Key(_integer(0), 2, "RevGAN: additive-coupling blocks in the invertible core"),
        "residual": Key(_flag, False, "RevGAN: output = upsampled input + network"),
        "init_std": Key(_number(0.0), 0.02, "RevGAN: std of the N(0, std) initialisation"),
        "disc_width": Key(_integer(1), 32, "PatchGAN: channels of the first layer"),
        "disc_layers": Key(_integer(1), 3, "PatchGAN: stride-2 layers"),
        "scales": Key(_integer(1), 5, "iUNet: resolution levels"),
        "blocks_per_scale": Key(_integer(1), 2, "iUNet: coupling blocks per scale"),
        "memory_saving": Key(_flag, True, "rebuild activations in backward instead of storing"),
    },
    "train": {
        "objective": Key(_text(("paired", "unpaired", "segmentation")), "paired",
                         "paired: pix2pix both ways; unpaired: CycleGAN; segmentation: DiceCE"),
        "epochs": Key(_integer(1), 125, "epochs at the initial learning rate"),
        "epochs_decay": Key(_integer(0), 0, "further epochs with the rate decayed linearly to 0"),
        "batch_size": Key(_integer(1), 1, "patches per step"),
        "lr": Key(_number(0.0), 2e-4, "Adam learning rate"),
        "betas": Key(_sequence(_number(0.0, 1.0, open_max=True), 2), [0.5, 0.999], "Adam betas"),
        "lambda_l1": Key(_number(0.0), 100.0, "paired: weight of the L1 term"),
        "lambda_cycle": Key(_number(0.0), 10.0, "unpaired: weight of the cycle term"),
        "lambda_gan": Key(_number(0.0), 1.0, "weight of the adversarial term (0: w/o L_GAN)"),
        "pool_size": Key(_integer(0), 50, "unpaired: generated volumes kept for the critics"),
        "seed": Key(_integer(0), 0, "seed of every random choice"),
        "time_limit": Key(_number(0.0), 0.0, "stop after this many seconds (0: no limit)"),
        "precision": Key(_text(PRECISIONS), "fp32",
                         "autocast dtype of the forward passes (fp16 adds a gradient scaler)"),
        "compile": Key(_flag, False, "torch.compile the networks' plain sub-networks"),
        "channels_last": Key(_flag, False, "weights and batches in channels-last-3d order"),
    },
    "infer": {
        "overlap": Key(_number(0.0, 1.0, open_max=True), 0.5, "sliding-window overlap"),
        "sw_batch_size": Key(_integer(1), 1, "windows per forward pass"),
        "blend": Key(_text(("gaussian", "constant")), "gaussian", "how windows are blended"),
        "precision": Key(_text(PRECISIONS), "fp32", "autocast dtype of the network"),
        "compile": Key(_flag, False, "torch.compile the network's plain sub-networks"),
        "channels_last": Key(_flag, False, "weights and windows in channels-last-3d order"),
    },
}

SECTIONS = tuple(name for name, spec in SCHEMA.items() if isinstance(spec, dict))

#: Model keys that only one model family reads; the others apply to every family.
MODEL_ONLY = {
    "revgan3d": ("depth", "residual", "disc_width", "disc_layers", "init_std"),
    "iunet3d": ("scales", "blocks_per_scale"),
}


def model_keys(kind: str) -> list[str]:
    """The ``[model]`` keys that model family ``kind`` reads."""
    foreign = {k for other, keys in MODEL_ONLY.items() if other != kind for k in keys}
    return [k for k in SCHEMA["model"] if k not in foreign]  # type: ignore[union-attr]


# --- loading -----------------------------------------------------------------------------------

def preset_names() -> list[str]:
    """Names of the presets shipped with revmed, sorted."""
    folder = resources.files("revmed.presets")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def defaults() -> dict[str, Any]:
    """The schema's defaults as a nested dict."""
    out: dict[str, Any] = {}
    for name, spec in SCHEMA.items():
        if isinstance(spec, dict):
            out[name] = {key: copy.deepcopy(k.default) for key, k in spec.items()}
        else:
            out[name] = copy.deepcopy(spec.default)
    return out


def _is_path(ref: str) -> bool:
    return ref.endswith(".toml") or os.sep in ref or "/" in ref


def _read_toml(ref: str) -> tuple[dict[str, Any], str]:
    """Return the raw TOML table of a preset name or path, and where it came from."""
    if _is_path(ref):
        path = Path(ref)
        if not path.is_file():
            raise ConfigError(f"{path}: no such preset file")
        origin, text = str(path), None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read preset file ({exc})") from exc
    else:
        if ref not in preset_names():
            raise ConfigError(
                f"unknown preset {ref!r}; choose one of {', '.join(preset_names())} "
                "or give a path to a .toml file")
        origin = f"preset {ref}"
        text = resources.files("revmed.presets").joinpath(f"{ref}.toml").read_text("utf-8")
    try:
        return tomllib.loads(text), origin
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML ({exc})") from exc
    except RecursionError:
        raise ConfigError(f"{origin}: invalid TOML (nested too deeply)") from None


def _merge(into: dict[str, Any], raw: dict[str, Any], origin: str) -> set[str]:
    """Check ``raw`` key by key against the schema and write the values into ``into``.

    Returns the dotted names of the keys ``raw`` set.
    """
    given: set[str] = set()
    for name, value in raw.items():
        spec = SCHEMA.get(name)
        if spec is None:
            raise ConfigError(f"{origin}: unknown key {name!r}")
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: [{name}] must be a table, got {_kind(value)}")
            for key, sub in value.items():
                if key not in spec:
                    raise ConfigError(f"{origin}: unknown key '{name}.{key}'")
                into[name][key] = _checked(spec[key], sub, f"{name}.{key}", origin)
                given.add(f"{name}.{key}")
        else:
            into[name] = _checked(spec, value, name, origin)
            given.add(name)
    return given


def _checked(key: Key, value: Any, dotted: str, origin: str) -> Any:
    try:
        return key.check(value)
    except ValueError as exc:
        raise ConfigError(f"{origin}: key '{dotted}': {exc}") from None


def _check_consistency(preset: dict[str, Any], origin: str, explicit: set[str]) -> None:
    """Checks that involve several keys; ``explicit`` holds the dotted keys a file or --set gave."""
    data, model = preset["data"], preset["model"]
    for dotted in sorted(explicit):
        section, _, key = dotted.partition(".")
        if section == "model" and key and key not in model_keys(model["kind"]):
            owner = next(k for k, keys in MODEL_ONLY.items() if key in keys)
            raise ConfigError(f"{origin}: key '{dotted}' applies to {owner} models, "
                              f"not {model['kind']}")
    if model["kind"] == "revgan3d" and model["width"] % 2:
        raise ConfigError(f"{origin}: key 'model.width': must be even (couplings split it in "
                          f"two), got {model['width']}")
    if model["kind"] == "iunet3d" and model["scales"] > 1 and model["width"] % 4:
        raise ConfigError(f"{origin}: key 'model.width': an iUNet with several scales needs a "
                          f"multiple of 4 (a quarter is downsampled), got {model['width']}")
    if preset["task"] == "seg" and preset["train"]["objective"] != "segmentation":
        raise ConfigError(f"{origin}: key 'train.objective': a seg preset needs 'segmentation'")
    if preset["task"] != "sr" and data["sr_factors"] != [1, 1, 1]:
        raise ConfigError(f"{origin}: key 'data.sr_factors': only sr presets change the grid")


def load_preset(ref: str, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Resolve a preset name or ``.toml`` path, apply ``key=value`` overrides, validate.

    Overrides use dotted keys and TOML values: ``train.lr=1e-4``, ``patch.size=[32,32,32]``,
    ``model.residual=true``; a value that is not valid TOML is taken as a string.
    """
    preset, given = _resolve(ref, chain=())
    origin = f"preset {ref}" if not _is_path(ref) else ref
    for item in overrides:
        given |= _merge(preset, parse_override(item), f"--set {item}")
    _check_consistency(preset, origin, given)
    return preset


def _resolve(ref: str, chain: tuple[str, ...]) -> tuple[dict[str, Any], set[str]]:
    if ref in chain:
        raise ConfigError(f"preset {ref}: 'base' chain loops ({' -> '.join(chain + (ref,))})")
    raw, origin = _read_toml(ref)
    base = raw.get("base", "")
    if base and not isinstance(base, str):
        raise ConfigError(f"{origin}: key 'base': expected a string, got {_kind(base)}")
    preset, given = _resolve(base, chain + (ref,)) if base else (defaults(), set())
    preset["name"] = Path(ref).stem if _is_path(ref) else ref
    preset["description"] = ""
    given |= _merge(preset, raw, origin)
    return preset, given


def parse_override(item: str) -> dict[str, Any]:
    """Turn ``"train.lr=1e-4"`` into ``{"train": {"lr": 1e-4}}``."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. train.lr=1e-4")
    dotted, text = (s.strip() for s in item.split("=", 1))
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    except RecursionError:
        raise ConfigError(f"--set {dotted}: the value is nested too deeply") from None
    parts = dotted.split(".")
    if len(parts) == 1:
        return {dotted: value}
    if len(parts) == 2:
        return {parts[0]: {parts[1]: value}}
    raise ConfigError(f"--set {item}: unknown key {dotted!r}")


def to_toml(preset: dict[str, Any]) -> str:
    """Render a resolved preset as TOML (top-level keys first, then one table per section)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in preset.items() if k not in SECTIONS]
    for section in SECTIONS:
        keys = model_keys(preset["model"]["kind"]) if section == "model" else preset[section]
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {toml_value(preset[section][k])}" for k in keys]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # a JSON string is a TOML basic string, except that TOML also escapes DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)
