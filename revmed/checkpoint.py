"""Checkpoints: a model card and a training state, written atomically, checksummed, and loaded
without unpickling code.

A ``Checkpoint`` holds a ``ModelCard`` (what inference needs: the network's family and
kwargs, the data mapping, the patch size and the ``[infer]`` settings), the resolved ``Preset``
it was trained with, the training position (``epoch``, ``step_in_epoch``), the last epoch's
``metrics``, and ``state`` (module, optimiser and scheduler state dicts, RNG states). This
module owns the file format; the trainer and the predictors only see the typed objects.

On disk a checkpoint is a dict of plain values and tensors: ``format``, ``version``,
``revmed`` (package version), ``model`` (``{"kind", "kwargs"}``), ``data`` (intensity mapping,
window, SR factors and interpolation, channels), ``patch_size``, ``preset`` (the resolved
preset as a dict), ``epoch``, ``step_in_epoch``, ``metrics`` and ``state``. Version 2 files
are the ordinary ``torch.save`` zip archive of that dict, whose zip comment (the last 78 bytes
of the file) is ``revmed-sha256:`` and the hex SHA-256 of every byte before it. ``torch.load``
reads the file as it would any checkpoint; ``read_payload`` first checks the digest, so a
truncated file or one with any byte changed is refused as corrupt. Version 1 files (the same
archive without the comment) still load, as do checkpoints whose preset predates later keys
(those take their defaults).

Loading uses ``torch.load(..., weights_only=True)``: a file that carries pickled code is refused
instead of run.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

import revmed
from revmed.io.atomic import atomic_path
from revmed.config import preset_from_dict
from revmed.errors import CheckpointError, ConfigError
from revmed.models import FAMILIES, build_model, get_family, model_spec
from revmed.preset import DataSection, InferSection, PatchSection, Preset, keys_of, plain
from revmed.sizes import format_bytes, require_memory
from revmed.regions import BRATS, LabelSet

FORMAT = "revmed-checkpoint"
VERSION = 2  # 2: SHA-256 in the zip comment; 1: no checksum (still read)

_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes, then the comment
_ZIP_START = b"PK\x03\x04"  # the first local file header of a zip archive
_MARK = b"revmed-sha256:"
_TRAILER = len(_MARK) + 64  # the comment: mark + hex digest


def _seal(archive: bytes) -> bytes:
    """Append ``_MARK`` + SHA-256 of everything before it as the archive's zip comment."""
    if archive[-22:-18] != _EOCD or archive[-2:] != b"\0\0":
        raise RuntimeError("torch.save did not end its archive with an empty zip comment")
    head = archive[:-2] + _TRAILER.to_bytes(2, "little")  # the comment length, also hashed
    return head + _MARK + hashlib.sha256(head).hexdigest().encode()


def _verify(path: Path, handle: BinaryIO, size: int) -> bool:
    """True if the file open in ``handle`` (``size`` bytes) ends with a matching checksum,
    False if with none; raise if it differs. Reads the file in chunks, never whole."""
    if size < _TRAILER:
        return False
    handle.seek(size - _TRAILER)
    trailer = handle.read(_TRAILER)
    if trailer[:-64] != _MARK:
        return False
    digest, left = hashlib.sha256(), size - _TRAILER
    handle.seek(0)
    while left > 0:
        chunk = handle.read(min(left, 1 << 20))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    if left or digest.hexdigest().encode() != trailer[-64:]:
        raise CheckpointError(f"{path}: corrupt checkpoint: checksum mismatch (the file was "
                              "altered or truncated after it was written)")
    return True


def _check_container(path: Path, handle: BinaryIO, size: int) -> None:
    """Refuse, before reading it, a file that is not a zip archive as ``torch.save`` writes,
    or that could not be loaded into the memory available."""
    handle.seek(0)
    if handle.read(4) != _ZIP_START:
        raise CheckpointError(f"{path}: not a loadable revmed checkpoint: not the zip archive "
                              "torch.save writes")
    # torch.load holds every tensor of the file in memory at once
    require_memory(str(path), size, f"loading this {format_bytes(size)} checkpoint would")


def write_payload(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format and version fields) to ``path`` atomically, checksummed."""
    path = Path(path)
    full = {"format": FORMAT, "version": VERSION, "revmed": revmed.__version__, **payload}
    buffer = io.BytesIO()
    torch.save(full, buffer)
    sealed = _seal(buffer.getvalue())
    with atomic_path(path) as tmp:
        tmp.write_bytes(sealed)
    return path


def read_payload(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint file's dict safely; ``kind`` (e.g. ``"revgan3d"``) checks the model
    family.

    Raises ``CheckpointError`` naming the file when it is missing, corrupt (checksum), not a
    revmed checkpoint, carries code, is from a newer format, or holds another kind of model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        _check_container(path, handle, size)
        checked = _verify(path, handle, size)
        handle.seek(0)
        payload = _load(path, handle, checked)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a revmed checkpoint")
    version = payload.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: not a revmed checkpoint (format version {version!r})")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} (written by revmed "
                              f"{payload.get('revmed')}); this revmed ({revmed.__version__}) "
                              f"reads versions up to {VERSION}: upgrade it to read this file")
    if version >= 2 and not checked:
        raise CheckpointError(f"{path}: corrupt checkpoint: checksum missing (the file was "
                              "altered or truncated after it was written)")
    model = payload.get("model")
    if kind is not None and isinstance(model, dict) and model.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {model.get('kind')} model, not {kind}")
    return payload


def _load(path: Path, handle: BinaryIO, checked: bool = True) -> Any:
    """``torch.load`` of tensors and plain values only; ``CheckpointError`` for anything else
    (a file that starts like a checkpoint but neither ends with its checksum nor loads was
    cut short or damaged: said so, rather than what the zip reader says)."""
    try:
        return torch.load(handle, map_location="cpu", weights_only=True)
    except MemoryError:
        raise CheckpointError(f"{path}: too large to load in the memory available") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for foreign files
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds pickled objects other than tensors and plain values (refused)"
        elif not checked:
            raise CheckpointError(f"{path}: corrupt checkpoint: truncated or damaged (it "
                                  "does not end with the checksum revmed writes, and its "
                                  "archive cannot be read)") from None
        else:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable revmed checkpoint: {reason}") from None


# --- the typed checkpoint -----------------------------------------------------------------------

#: ``[data]`` keys the model card keeps: how volumes map in and out of the network.
DATA_KEYS = ("in_channels", "out_channels", "intensity", "window", "sr_factors", "sr_upsample",
             "input_mean", "input_std", "output_mean", "output_std")


@dataclass(frozen=True)
class DataCard:
    """How a volume maps into the network and back: channels, intensity mapping, window,
    super-resolution factors and interpolation, the per-channel statistics of
    ``zscore-dataset`` (empty for other mappings; ``revmed.data.statistics``), the dataset's
    channel names (in the order the
    network takes them; empty where unknown), and for segmentation the label set whose regions
    the network predicts (``revmed.regions``; BraTS in checkpoints older than label sets)."""

    in_channels: int
    out_channels: int
    intensity: str
    window: tuple[float, float]
    sr_factors: tuple[int, int, int]
    sr_upsample: str
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    output_mean: tuple[float, ...] = ()
    output_std: tuple[float, ...] = ()
    channels: tuple[str, ...] = ()
    labels: LabelSet | None = None

    @property
    def refines_grid(self) -> bool:
        """Whether the network works on a grid finer than its input's (super-resolution)."""
        return tuple(self.sr_factors) != (1, 1, 1)


@dataclass(frozen=True)
class ModelCard:
    """What inference needs to run a trained network on whole volumes, without the preset.

    Attributes:
        kind: the model family (``revmed.models``).
        kwargs: its constructor's keyword arguments.
        task: ``sr``, ``da`` or ``seg`` (which predictor runs it).
        data: the data mapping.
        patch_size: the training patch size, the size of inference windows.
        infer: the ``[infer]`` settings (overlap, blending, precision, ...).
    """

    kind: str
    kwargs: dict[str, Any]
    task: str
    data: DataCard
    patch_size: tuple[int, int, int]
    infer: InferSection

    @classmethod
    def of(cls, preset: Preset, channels: tuple[str, ...] = (),
           labels: LabelSet | None = None) -> ModelCard:
        """The card of the network ``preset`` describes, for data with ``channels`` (and, for
        segmentation, the data's label set ``labels``, which it needs)."""
        kind, kwargs = model_spec(preset)
        if preset.task == "seg" and labels is None:
            raise ValueError("the card of a segmentation network needs its data's label set")
        data = DataCard(**{k: getattr(preset.data, k) for k in DATA_KEYS},
                        channels=tuple(channels), labels=labels)
        return cls(kind, kwargs, preset.task, data, tuple(preset.patch.size), preset.infer)

    def build(self) -> nn.Module:
        """The (untrained) network of this card."""
        return build_model(self.kind, **self.kwargs)


@dataclass
class Checkpoint:
    """A model card, the preset it was trained with, the training position and its state."""

    card: ModelCard
    preset: Preset
    state: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    step_in_epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The data the run trained on (``revmed.engine.run_folder.data_source``; empty in
    #: checkpoints older than that record).
    data_source: dict[str, str] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """The file's dict (see the module doc)."""
        data = self.card.data
        return {
            "model": {"kind": self.card.kind, "kwargs": dict(self.card.kwargs)},
            "data": {**{k: _plain(getattr(data, k)) for k in DATA_KEYS},
                     "channels": list(data.channels),
                     **(data.labels.to_dict() if data.labels is not None else {})},
            "patch_size": list(self.card.patch_size), "preset": self.preset.to_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "metrics": self.metrics, "state": self.state,
            "data_source": dict(self.data_source),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | os.PathLike) -> Checkpoint:
        """The checkpoint of a file's dict; ``CheckpointError`` naming ``path`` when the dict
        is not a model checkpoint."""
        try:
            preset = preset_from_dict(payload["preset"], f"{path} (its preset)")
            data = payload["data"]
            card = ModelCard(
                kind=payload["model"]["kind"], kwargs=dict(payload["model"]["kwargs"]),
                task=preset.task,
                # keys newer than a checkpoint (the statistics) take DataCard's defaults
                data=DataCard(**{k: _frozen(data[k]) for k in DATA_KEYS if k in data},
                              channels=tuple(data.get("channels", ())),
                              labels=_label_set(data, preset.task, path)),
                patch_size=tuple(payload["patch_size"]), infer=preset.infer)
            expected = (ModelCard.of(preset, card.data.channels, card.data.labels)
                        if _states_model(payload["preset"]) else None)
            card = _checked_card(card, expected, path)
            _check_network(card, payload.get("state", {}), path)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: not a revmed model checkpoint (no {exc})") from None
        epoch = _count(payload.get("epoch", 0), "epoch", preset.train.total_epochs, path)
        step = _count(payload.get("step_in_epoch", 0), "step_in_epoch", None, path)
        metrics = payload.get("metrics", {})
        if not isinstance(metrics, dict):
            raise CheckpointError(f"{path}: its metrics are not a table; the file was altered "
                                  "or damaged")
        return cls(card, preset, payload.get("state", {}), epoch, step, dict(metrics),
                   _data_source(payload.get("data_source")))


def _states_model(saved: Any) -> bool:
    """Whether a checkpoint's ``saved`` preset states its ``[model]`` section (revmed always
    writes it; only hand-made checkpoints leave it out): its card is then checked against the
    card that preset makes."""
    model = saved.get("model") if isinstance(saved, dict) else None
    return isinstance(model, dict) and "kind" in model


def _card_problem(card: ModelCard, expected: ModelCard | None) -> str | None:
    """What is wrong with ``card`` by the schema, or against the card its preset makes
    (``expected``, when known: ``_states_model``); None when nothing is."""
    tasks = get_family(card.kind).tasks if card.kind in FAMILIES else ()
    if tasks and card.task not in tasks:
        return f"task {card.task!r} for a {card.kind} network (it does {', '.join(tasks)})"
    data_keys = keys_of(DataSection)
    for name in DATA_KEYS:
        try:
            data_keys[name].check(_plain(getattr(card.data, name)))
        except ValueError as exc:
            return f"data.{name}: {exc}"
    try:
        keys_of(PatchSection)["size"].check(list(card.patch_size))
    except ValueError as exc:
        return f"patch size: {exc}"
    for name in ("in_channels", "out_channels"):
        if name in card.kwargs and card.kwargs[name] != getattr(card.data, name):
            return f"the network's {name} {card.kwargs[name]!r} is not data.{name}"
    if len(card.data.channels) not in (0, card.data.in_channels):
        return f"{len(card.data.channels)} channel names for {card.data.in_channels} channels"
    if expected is None:
        return None
    if card.kind != expected.kind:
        return f"model kind {card.kind!r}, but its preset's is {expected.kind!r}"
    for name, value in card.kwargs.items():
        if name not in expected.kwargs:
            return f"unknown network argument {name!r}"
        if plain(value) != plain(expected.kwargs[name]):
            return (f"network argument {name} = {value!r}, but its preset makes it "
                    f"{expected.kwargs[name]!r}")
    for name in DATA_KEYS:
        if _plain(getattr(card.data, name)) != _plain(getattr(expected.data, name)):
            return f"data.{name} differs from its preset's"
    if tuple(card.patch_size) != tuple(expected.patch_size):
        return "its patch size differs from its preset's"
    return None


def _checked_card(card: ModelCard, expected: ModelCard | None,
                  path: str | os.PathLike) -> ModelCard:
    """``card`` checked by the schema and against the card its preset makes (``expected``;
    ``_card_problem``), with the network arguments its preset makes (a card from an older
    revmed may lack new ones); ``CheckpointError`` naming ``path`` and the problem
    otherwise."""
    problem = _card_problem(card, expected)
    if problem is not None:
        raise CheckpointError(f"{path}: its model card does not hold together ({problem}); "
                              "the file was altered or damaged")
    return card if expected is None else replace(card, kwargs=dict(expected.kwargs))


def _check_network(card: ModelCard, state: Any, path: str | os.PathLike) -> None:
    """Build the card's network on the meta device (no memory), refuse it when its weights
    would not fit in memory, and check that ``state["generator"]`` holds exactly its weights,
    shape by shape: ``CheckpointError`` before anything real is built."""
    try:
        with torch.device("meta"):
            expected = card.build().state_dict()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: its model card does not describe a {card.kind} "
                              f"network ({type(exc).__name__}: {str(exc)[:200]})") from None
    count = sum(t.numel() for t in expected.values())
    require_memory(str(path), count * 4 * 2,
                   f"the {card.kind} network of its model card ({count:,} parameters) would")
    weights = state.get("generator") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: holds no network weights")
    for name, want in expected.items():
        got = weights.get(name)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else "missing"
            raise CheckpointError(f"{path}: its network weights do not fit its model card "
                                  f"({name}: {shape}, expected {tuple(want.shape)}); the file "
                                  "was altered or damaged")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: its network weights do not fit its model card "
                              f"(unexpected {extra[0]!r}); the file was altered or damaged")


def _count(value: Any, name: str, most: int | None, path: str | os.PathLike) -> int:
    """A training position of a checkpoint: a whole number from 0 to ``most`` (no bound for
    None); ``CheckpointError`` naming ``path`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or \
            (most is not None and value > most):
        bound = f"0 to {most}" if most is not None else "a whole number from 0"
        raise CheckpointError(f"{path}: its {name} is {value!r}, not {bound}; the file was "
                              "altered or damaged")
    return value


def _data_source(value: Any) -> dict[str, str]:
    """The recorded data source: a dict of strings (anything else reads as none recorded)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _label_set(data: dict[str, Any], task: str, path: str | os.PathLike) -> LabelSet | None:
    """The card's label set: the one saved, BraTS for segmentation checkpoints older than
    label sets, None for other tasks."""
    if "labels" not in data:
        return BRATS if task == "seg" else None
    try:
        return LabelSet.from_dict(data)
    except ValueError as exc:
        raise CheckpointError(f"{path}: its label set is not usable ({exc})") from None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically, checksummed."""
    return write_payload(path, checkpoint.to_payload())


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> Checkpoint:
    """Read a checkpoint safely (see ``read_payload``; ``kind`` checks the model family)."""
    return Checkpoint.from_payload(read_payload(path, kind), path)
