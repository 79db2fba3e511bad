"""Presets: TOML files that hold a task's settings, loaded into a typed, frozen ``Preset``.

A preset is a TOML document with a few top-level keys and the sections ``data``, ``patch``,
``model``, ``train`` and ``infer``. The keys, their types and defaults are declared once, as
the fields of ``revmed.preset``'s dataclasses (``[model]``: the keys common to every family
plus each registered family's own, ``revmed.models``). Unknown keys and wrong types are
``ConfigError``s that name the key and the file. A preset may name a ``base`` preset whose
values it overrides, so the ``demo-*`` presets only state what differs. A relative path in
``base`` is read from the folder of the file that names it (not from the working directory), so
a preset and its base can move together. Files may start with a UTF-8 byte-order mark.

``load_preset`` returns a ``Preset``; library functions take the section they need
(``preset.train``), never the whole TOML document.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

from revmed.errors import ConfigError
from revmed.preset import (PRECISIONS, SECTIONS, SYNTH_TASKS, TASKS, InvalidKey, Key,
                           ModelSection, Preset, freeze, keys_of, text, top_level_keys, type_name)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["PRECISIONS", "SECTIONS", "SYNTH_TASKS", "TASKS", "build_preset", "defaults", "load_preset", "parse_override",
           "preset_from_dict", "preset_names", "schema", "to_toml", "toml_value"]


def _families() -> dict:
    """The registered model families (importing ``revmed.models`` registers them; it is
    imported here, not at the top, so that ``revmed --help`` does not load torch)."""
    from revmed.models import FAMILIES

    return FAMILIES


# --- the schema --------------------------------------------------------------------------------

def _model_keys() -> dict[str, Key]:
    """``[model]``: the keys of every family (common keys first), ``kind`` checked against
    the registered families."""
    families = _families()
    out = dict(keys_of(ModelSection))
    common = out["kind"]
    out["kind"] = Key(text(tuple(families)), common.default, common.help)
    for family in families.values():
        section = keys_of(family.section)
        for name in family.own_keys:
            out.setdefault(name, section[name])
    return out


def schema() -> dict[str, Key | dict[str, Key]]:
    """Every key a preset may hold: top-level keys, then ``{section: {key: Key}}``."""
    out: dict[str, Key | dict[str, Key]] = dict(top_level_keys())
    for name, section in SECTIONS.items():
        out[name] = _model_keys() if name == "model" else keys_of(section)
    return out


def defaults() -> dict[str, Any]:
    """The schema's defaults as a nested dict (``[model]`` with the keys of every family)."""
    out: dict[str, Any] = {}
    for name, spec in schema().items():
        if isinstance(spec, dict):
            out[name] = {k: copy.deepcopy(key.default) for k, key in spec.items()}
        else:
            out[name] = copy.deepcopy(spec.default)
    return out


def preset_names() -> list[str]:
    """Names of the presets shipped with revmed, sorted."""
    folder = resources.files("revmed.presets")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


# --- reading and merging -----------------------------------------------------------------------

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
            text = path.read_text(encoding="utf-8-sig")  # editors may add a BOM
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
    spec_of = schema()
    given: set[str] = set()
    for name, value in raw.items():
        spec = spec_of.get(name)
        if spec is None:
            raise ConfigError(f"{origin}: unknown key {name!r}")
        if not isinstance(spec, dict):
            into[name] = _checked(spec, value, name, origin)
            given.add(name)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table, got {type_name(value)}")
        for key, sub in value.items():
            if key not in spec:
                raise ConfigError(f"{origin}: unknown key '{name}.{key}'")
            into[name][key] = _checked(spec[key], sub, f"{name}.{key}", origin)
            given.add(f"{name}.{key}")
    return given


def _checked(key: Key, value: Any, dotted: str, origin: str) -> Any:
    try:
        return key.check(value)
    except ValueError as exc:
        raise ConfigError(f"{origin}: key '{dotted}': {exc}") from None


def _check_consistency(values: dict[str, Any], origin: str, explicit: set[str]) -> None:
    """Checks that involve several keys; ``explicit`` holds the dotted keys a file or --set gave."""
    families = _families()
    family = families[values["model"]["kind"]]
    for dotted in sorted(explicit):
        section, _, key = dotted.partition(".")
        if section == "model" and key and key in _model_keys() and \
                key not in keys_of(family.section):
            owner = next(f.name for f in families.values() if key in f.own_keys)
            raise ConfigError(f"{origin}: key '{dotted}' applies to {owner} models, "
                              f"not {family.name}")
    if values["task"] == "seg" and values["train"]["objective"] != "segmentation":
        raise ConfigError(f"{origin}: key 'train.objective': a seg preset needs 'segmentation'")
    if values["patch"]["sampler"] == "labels" and values["task"] != "seg":
        raise ConfigError(f"{origin}: key 'patch.sampler': 'labels' centres crops on label "
                          "maps, which only seg presets have; use 'random' or 'grid'")
    if values["task"] != "sr" and values["data"]["sr_factors"] != [1, 1, 1]:
        raise ConfigError(f"{origin}: key 'data.sr_factors': only sr presets change the grid")
    if values["task"] == "seg" and values["data"]["intensity"] == "zscore-dataset":
        raise ConfigError(f"{origin}: key 'data.intensity': 'zscore-dataset' maps RevGAN "
                          "outputs back to the files' units; segmentation uses 'zscore'")
    _check_statistics(values["data"], origin)


def _check_statistics(data: dict[str, Any], origin: str) -> None:
    """The ``zscore-dataset`` statistics: one value per channel (or none yet), stds above 0."""
    for side in ("input", "output"):
        channels = data["in_channels" if side == "input" else "out_channels"]
        for stat in ("mean", "std"):
            name = f"{side}_{stat}"
            given = data[name]
            if given and len(given) != channels:
                raise ConfigError(f"{origin}: key 'data.{name}': {len(given)} value(s) for "
                                  f"{channels} {side} channel(s)")
            if stat == "std" and any(v <= 0 for v in given):
                raise ConfigError(f"{origin}: key 'data.{name}': every std must be above 0")


def build_preset(values: dict[str, Any], origin: str) -> Preset:
    """The ``Preset`` of a checked nested dict of values (``[model]`` may hold the keys of other
    families: they are left out), after the checks of its model family."""
    family = _families()[values["model"]["kind"]]

    def section(cls: type, name: str):
        return cls(**{f.name: freeze(values[name][f.name]) for f in fields(cls)})

    model = section(family.section, "model")
    try:
        family.check(model)
    except InvalidKey as exc:
        raise ConfigError(f"{origin}: key '{exc.dotted}': {exc.reason}") from None
    top = {name: values[name] for name in top_level_keys()}
    return Preset(**top, model=model, **{name: section(cls, name)
                                         for name, cls in SECTIONS.items() if name != "model"})


def load_preset(ref: str, overrides: Iterable[str] = ()) -> Preset:
    """Resolve a preset name or ``.toml`` path, apply ``key=value`` overrides, validate.

    Overrides use dotted keys and TOML values: ``train.lr=1e-4``, ``patch.size=[32,32,32]``,
    ``model.residual=true``; a value that is not valid TOML is taken as a string.
    """
    values, given = _resolve(ref, chain=())
    origin = f"preset {ref}" if not _is_path(ref) else ref
    for item in overrides:
        given |= _merge(values, parse_override(item), f"--set {item}")
    _check_consistency(values, origin, given)
    return build_preset(values, origin)


def _chain_key(ref: str) -> str:
    """How a preset is known in a ``base`` chain: a shipped preset by name, a file by its
    absolute path (so one file reached by two spellings is one link)."""
    return os.path.abspath(ref) if _is_path(ref) else ref


def _base_ref(base: str, ref: str) -> str:
    """``base`` as named in the preset ``ref``: a relative path is taken from the folder of
    the file ``ref``."""
    if _is_path(base) and _is_path(ref) and not os.path.isabs(base):
        return os.path.join(os.path.dirname(ref), base)
    return base


def _resolve(ref: str, chain: tuple[str, ...]) -> tuple[dict[str, Any], set[str]]:
    if _chain_key(ref) in map(_chain_key, chain):
        raise ConfigError(f"preset {ref}: 'base' chain loops ({' -> '.join(chain + (ref,))})")
    raw, origin = _read_toml(ref)
    base = raw.get("base", "")
    if base and not isinstance(base, str):
        raise ConfigError(f"{origin}: key 'base': expected a string, got {type_name(base)}")
    base = _base_ref(base, ref) if base else base
    values, given = _resolve(base, chain + (ref,)) if base else (defaults(), set())
    values["name"] = Path(ref).stem if _is_path(ref) else ref
    values["description"] = ""
    given |= _merge(values, raw, origin)
    return values, given


def preset_from_dict(saved: dict[str, Any], origin: str) -> Preset:
    """The ``Preset`` of a resolved preset saved as a dict (in a checkpoint, or sent to another
    process): keys the saved preset lacks (it is older than them) take their defaults, keys of
    other model families are left out, and every value is checked again."""
    values = defaults()
    spec_of = schema()
    for name, value in saved.items():
        spec = spec_of.get(name)
        if isinstance(spec, dict) and isinstance(value, dict):
            for key, sub in value.items():
                if key in spec:
                    values[name][key] = _checked(spec[key], sub, f"{name}.{key}", origin)
        elif spec is not None and not isinstance(spec, dict):
            values[name] = _checked(spec, value, name, origin)
    return build_preset(values, origin)


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


def to_toml(preset: Preset) -> str:
    """Render a preset as TOML (top-level keys first, then one table per section)."""
    values = preset.to_dict()
    lines = [f"{k} = {toml_value(v)}" for k, v in values.items() if k not in SECTIONS]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in values[section].items()]
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
