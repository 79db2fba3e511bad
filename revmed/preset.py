"""The preset's schema: one frozen dataclass per section, each field a key with its check,
default and meaning.

A preset is a ``Preset``: a few top-level keys (``name``, ``task``, ...) and the sections
``data``, ``patch``, ``model``, ``train`` and ``infer``. Each field of a section is declared
with ``key(check, default, help)``; the checks, the defaults, the error messages of
``revmed.config`` and the reference table in docs/cli.md all come from these declarations, so
the schema is written once. Functions take the section they need (``preset.train``), not the
whole preset.

``[model]`` holds the keys every model family reads (``ModelSection``); each family
(``revmed.models``) declares its own keys in a subclass, so ``preset.model`` is, e.g., a
``RevGANSection`` with ``depth`` and ``residual``.

Sequences are tuples here (the objects are frozen); ``Preset.to_dict`` gives the plain nested
dict of lists that TOML, JSON and checkpoints hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

Checker = Callable[[Any], Any]


# --- value checkers: each returns the (coerced) value or raises ValueError with a reason ------

def type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def text(choices: Iterable[str] | None = None) -> Checker:
    """A string (one of ``choices`` when given)."""
    allowed = tuple(choices) if choices else None

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type_name(value)}")
        if allowed and value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}; got {value!r}")
        return value

    check.describe = "string" if not allowed else "one of " + ", ".join(repr(a) for a in allowed)  # type: ignore[attr-defined]
    return check


def integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    """An integer (at least ``minimum``, at most ``maximum``); booleans are refused."""
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {type_name(value)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    bounds = ([f">= {minimum}"] if minimum is not None else []) + (
        [f"<= {maximum}"] if maximum is not None else [])
    check.describe = " ".join(["integer", ", ".join(bounds)]).strip()  # type: ignore[attr-defined]
    return check


def plain_name(value: Any) -> str:
    """A string usable as one file name: no path separator or control character, not ``.``
    or ``..`` (a preset's name names its run folder under ``runs/``)."""
    value = text()(value)
    if any(c in "/\\" or ord(c) < 32 for c in value) or value in (".", ".."):
        raise ValueError(f"must be a plain name (no path separators), got {value!r}")
    return value


plain_name.describe = "string (a plain name)"  # type: ignore[attr-defined]


def number(minimum: float | None = None, maximum: float | None = None,
           open_max: bool = False) -> Checker:
    """A finite number, as a float, within the bounds (``open_max``: below ``maximum``)."""
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {type_name(value)}")
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


def flag(value: Any) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {type_name(value)}")
    return value


flag.describe = "true or false"  # type: ignore[attr-defined]


def sequence(item: Checker, length: int | None, ordered: bool = False) -> Checker:
    """A list of ``length`` values of ``item`` (any number with ``None``; strictly increasing
    with ``ordered``)."""
    def check(value: Any) -> list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list of {length or 'values'}, got {type_name(value)}")
        if length is not None and len(value) != length:
            raise ValueError(f"expected {length} values, got {len(value)}")
        items = [item(v) for v in value]
        if ordered and not all(a < b for a, b in zip(items, items[1:], strict=False)):
            raise ValueError(f"values must increase, got {items}")
        return items

    check.describe = (f"list of {length if length is not None else 'any number of'} "  # type: ignore[attr-defined]
                      f"{getattr(item, 'describe', 'values')}")
    return check


# --- keys ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Key:
    """One preset key: how to check it, its default (plain: lists, not tuples) and a one-line
    meaning."""

    check: Checker
    default: Any
    help: str


def key(check: Checker, default: Any, help: str) -> Any:  # noqa: A002 - the key's help text
    """A dataclass field that is a preset key (see ``Key``)."""
    frozen = freeze(default)
    if isinstance(frozen, tuple):
        return field(default_factory=lambda: frozen, metadata={"key": Key(check, default, help)})
    return field(default=frozen, metadata={"key": Key(check, default, help)})


def keys_of(section: type) -> dict[str, Key]:
    """The keys a section dataclass declares, in declaration order."""
    return {f.name: f.metadata["key"] for f in fields(section) if "key" in f.metadata}


def freeze(value: Any) -> Any:
    """Lists (nested too) as tuples."""
    return tuple(freeze(v) for v in value) if isinstance(value, list | tuple) else value


def plain(value: Any) -> Any:
    """Tuples (nested too) as lists, as TOML, JSON and checkpoints hold them."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return [plain(v) for v in value] if isinstance(value, list | tuple) else value


class InvalidKey(ValueError):
    """A key's value is wrong given the other keys; ``revmed.config`` names file and key."""

    def __init__(self, dotted: str, reason: str) -> None:
        super().__init__(reason)
        self.dotted, self.reason = dotted, reason


# --- the sections -------------------------------------------------------------------------------

TASKS = ("sr", "da", "seg")
SYNTH_TASKS = ("chestct-sr", "chestct-da", "hcp-sr", "brats-seg")
#: ``precision`` values (``revmed.runtime``).
PRECISIONS = ("fp32", "bf16", "fp16")
OBJECTIVES = ("paired", "unpaired", "segmentation")
#: Largest values of keys whose larger values can only exhaust memory or fail later: a seed
#: must fit NumPy's and MONAI's 32-bit seeds; no scanner needs a 16-fold finer grid along an
#: axis, and no 3D network a patch of more than 1024 voxels along one.
MAX_SEED = 2**32 - 1


def check_seed(seed) -> int:
    """``seed`` when it is a whole number from 0 to ``MAX_SEED`` (the rule ``train.seed``
    follows, for every command that takes a seed), else an ``InputError`` about ``seed``."""
    from revmed.errors import InputError

    if isinstance(seed, bool) or not hasattr(seed, "__index__") or \
            not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"seed {seed!r}: must be a whole number from 0 to {MAX_SEED}",
                         option="seed")
    return int(seed)
MAX_SR_FACTOR = 16
MAX_PATCH_SIZE = 1024


@dataclass(frozen=True)
class DataSection:
    """``[data]``: how volumes become network inputs and targets."""

    in_channels: int = key(integer(1), 1, "channels of the network input")
    out_channels: int = key(integer(1), 1, "channels of the network output")
    intensity: str = key(text(("window", "zscore", "zscore-dataset")), "window",
                         "window: clip to `window` and map linearly to [-1, 1]; zscore: per "
                         "channel and volume, inside the foreground; zscore-dataset: per "
                         "channel with the training split's mean and std (the *_mean and "
                         "*_std keys), inverted exactly on output")
    window: tuple[float, float] = key(sequence(number(), 2, ordered=True), [-1150.0, 350.0],
                                      "intensity range mapped to [-1, 1] (HU for CT)")
    input_mean: tuple[float, ...] = key(
        sequence(number(), None), [],
        "zscore-dataset: mean of each input channel (empty: measured on the train split)")
    input_std: tuple[float, ...] = key(
        sequence(number(0.0), None), [],
        "zscore-dataset: std of each input channel (empty: measured on the train split)")
    output_mean: tuple[float, ...] = key(
        sequence(number(), None), [],
        "zscore-dataset: mean of each output channel (empty: measured on the train split)")
    output_std: tuple[float, ...] = key(
        sequence(number(0.0), None), [],
        "zscore-dataset: std of each output channel (empty: measured on the train split)")
    sr_factors: tuple[int, int, int] = key(
        sequence(integer(1, MAX_SR_FACTOR), 3), [1, 1, 1],
        "super-resolution factor per voxel axis (i, j, k); 1 = none")
    sr_upsample: str = key(text(("bspline", "trilinear", "nearest")), "bspline",
                           "how the low-resolution input is put on the output grid")
    foreground_above: float = key(number(), -0.99,
                                  "normalised value above which a voxel is foreground (used "
                                  "when the dataset has no masks)")
    min_foreground: float = key(number(0.0, 1.0), 0.0,
                                "patches with a smaller foreground fraction are dropped")


@dataclass(frozen=True)
class PatchSection:
    """``[patch]``: the training patches."""

    size: tuple[int, int, int] = key(sequence(integer(1, MAX_PATCH_SIZE), 3), [64, 64, 64],
                                     "patch size per voxel axis")
    sampler: str = key(text(("random", "labels", "grid")), "random",
                       "random crops, crops centred on each label in turn (segmentation), or a "
                       "regular grid")
    per_volume: int = key(integer(1), 8, "random crops drawn per volume")
    overlap: float = key(number(0.0, 1.0, open_max=True), 0.0, "grid patch overlap fraction")


@dataclass(frozen=True)
class ModelSection:
    """``[model]``: the keys of every model family; each family's subclass adds its own."""

    kind: str = key(text(), "revgan3d", "model family")
    width: int = key(integer(2), 32,
                     "channels inside the network (even: couplings split them)")
    memory_saving: bool = key(flag, True,
                              "rebuild activations in backward instead of storing them")


@dataclass(frozen=True)
class TrainSection:
    """``[train]``: objective, optimisation, schedule and how the steps run."""

    objective: str = key(text(OBJECTIVES), "paired",
                         "paired: pix2pix both ways; unpaired: CycleGAN; segmentation: DiceCE")
    epochs: int = key(integer(1), 125, "epochs at the initial learning rate")
    epochs_decay: int = key(integer(0), 0,
                            "further epochs with the rate decayed linearly to 0")
    batch_size: int = key(integer(1), 1, "patches per step")
    lr: float = key(number(0.0), 2e-4, "Adam learning rate")
    betas: tuple[float, float] = key(sequence(number(0.0, 1.0, open_max=True), 2),
                                     [0.5, 0.999], "Adam betas")
    lambda_l1: float = key(number(0.0), 100.0, "paired: weight of the L1 term")
    lambda_cycle: float = key(number(0.0), 10.0, "unpaired: weight of the cycle term")
    lambda_gan: float = key(number(0.0), 1.0,
                            "weight of the adversarial term (0: w/o L_GAN)")
    pool_size: int = key(integer(0), 50, "unpaired: generated volumes kept for the critics")
    seed: int = key(integer(0, MAX_SEED), 0, "seed of every random choice")
    time_limit: float = key(number(0.0), 0.0,
                            "stop after this many seconds (0: no limit); with a decay, the "
                            "rate also falls with the time when it runs ahead of the epochs")
    precision: str = key(text(PRECISIONS), "fp32",
                         "autocast dtype of the forward passes (fp16 adds a gradient scaler)")
    compile: bool = key(flag, False, "torch.compile the networks' plain sub-networks")
    channels_last: bool = key(flag, False, "weights and batches in channels-last-3d order")

    @property
    def total_epochs(self) -> int:
        """Epochs at the initial rate plus the decay epochs."""
        return self.epochs + self.epochs_decay

    @property
    def uses_critics(self) -> bool:
        """Whether the objective trains PatchGAN critics (a RevGAN objective with a GAN term)."""
        return self.objective != "segmentation" and self.lambda_gan > 0


@dataclass(frozen=True)
class InferSection:
    """``[infer]``: how whole volumes are predicted."""

    overlap: float = key(number(0.0, 1.0, open_max=True), 0.5, "sliding-window overlap")
    sw_batch_size: int = key(integer(1), 1, "windows per forward pass")
    blend: str = key(text(("gaussian", "constant")), "gaussian", "how windows are blended")
    precision: str = key(text(PRECISIONS), "fp32", "autocast dtype of the network")
    compile: bool = key(flag, False, "torch.compile the network's plain sub-networks")
    channels_last: bool = key(flag, False, "weights and windows in channels-last-3d order")


#: The sections and their dataclasses (``[model]``: the keys common to every family).
SECTIONS: dict[str, type] = {"data": DataSection, "patch": PatchSection, "model": ModelSection,
                             "train": TrainSection, "infer": InferSection}


@dataclass(frozen=True)
class Preset:
    """A resolved preset: top-level keys, then one object per section (see the module doc)."""

    name: str = key(plain_name, "", "preset name (defaults to the file name)")
    description: str = key(text(), "", "one line saying what the preset is for")
    base: str = key(text(), "", "preset whose values this one starts from")
    task: str = key(text(TASKS), "sr", "sr (super-resolution), da (domain adaptation) or seg")
    data_dir: str = key(text(), "data", "default dataset folder (relative to the working "
                        "directory)")
    synth: str = key(text(("",) + SYNTH_TASKS), "",
                     "`revmed synth` task that makes matching data")
    data: DataSection = field(default_factory=DataSection)
    patch: PatchSection = field(default_factory=PatchSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    infer: InferSection = field(default_factory=InferSection)

    def to_dict(self) -> dict[str, Any]:
        """The preset as a plain nested dict (lists, not tuples): top-level keys first, then
        each section; ``[model]`` holds the keys of its family only."""
        return plain(asdict(self))


def top_level_keys() -> dict[str, Key]:
    """The keys outside the sections (``name``, ``task``, ...)."""
    return keys_of(Preset)


