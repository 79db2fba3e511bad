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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import revmed
from revmed.atomic import atomic_path
from revmed.config import preset_from_dict
from revmed.errors import CheckpointError, ConfigError
from revmed.models import build_model, model_spec
from revmed.preset import InferSection, Preset

FORMAT = "revmed-checkpoint"
VERSION = 2  # 2: SHA-256 in the zip comment; 1: no checksum (still read)

_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes, then the comment
_MARK = b"revmed-sha256:"
_TRAILER = len(_MARK) + 64  # the comment: mark + hex digest


def _seal(archive: bytes) -> bytes:
    """Append ``_MARK`` + SHA-256 of everything before it as the archive's zip comment."""
    if archive[-22:-18] != _EOCD or archive[-2:] != b"\0\0":
        raise RuntimeError("torch.save did not end its archive with an empty zip comment")
    head = archive[:-2] + _TRAILER.to_bytes(2, "little")  # the comment length, also hashed
    return head + _MARK + hashlib.sha256(head).hexdigest().encode()


def _verify(path: Path, data: bytes) -> bool:
    """True if ``data`` ends with a matching checksum, False if with none; raise if it differs."""
    if len(data) < _TRAILER or data[-_TRAILER:-64] != _MARK:
        return False
    if hashlib.sha256(data[:-_TRAILER]).hexdigest().encode() != data[-64:]:
        raise CheckpointError(f"{path}: corrupt checkpoint: checksum mismatch (the file was "
                              "altered or truncated after it was written)")
    return True


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
    data = path.read_bytes()
    checked = _verify(path, data)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds pickled objects other than tensors and plain values (refused)"
        raise CheckpointError(f"{path}: not a loadable revmed checkpoint: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a revmed checkpoint")
    version = int(payload.get("version", 0))
    if version > VERSION:
        raise CheckpointError(f"{path}: written by a newer revmed ({payload.get('revmed')}); "
                              f"this is {revmed.__version__}: upgrade to read it")
    if version >= 2 and not checked:
        raise CheckpointError(f"{path}: corrupt checkpoint: checksum missing (the file was "
                              "altered or truncated after it was written)")
    if kind is not None and payload["model"]["kind"] != kind:
        raise CheckpointError(f"{path}: holds a {payload['model']['kind']} model, not {kind}")
    return payload


# --- the typed checkpoint -----------------------------------------------------------------------

#: ``[data]`` keys the model card keeps: how volumes map in and out of the network.
DATA_KEYS = ("in_channels", "out_channels", "intensity", "window", "sr_factors", "sr_upsample")


@dataclass(frozen=True)
class DataCard:
    """How a volume maps into the network and back: channels, intensity mapping, window,
    super-resolution factors and interpolation, and the dataset's channel names (in the order
    the network takes them; empty where unknown)."""

    in_channels: int
    out_channels: int
    intensity: str
    window: tuple[float, float]
    sr_factors: tuple[int, int, int]
    sr_upsample: str
    channels: tuple[str, ...] = ()

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
    def of(cls, preset: Preset, channels: tuple[str, ...] = ()) -> ModelCard:
        """The card of the network ``preset`` describes, for data with ``channels``."""
        kind, kwargs = model_spec(preset)
        data = DataCard(**{k: getattr(preset.data, k) for k in DATA_KEYS},
                        channels=tuple(channels))
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

    def to_payload(self) -> dict[str, Any]:
        """The file's dict (see the module doc)."""
        data = self.card.data
        return {
            "model": {"kind": self.card.kind, "kwargs": dict(self.card.kwargs)},
            "data": {**{k: _plain(getattr(data, k)) for k in DATA_KEYS},
                     "channels": list(data.channels)},
            "patch_size": list(self.card.patch_size), "preset": self.preset.to_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "metrics": self.metrics, "state": self.state,
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
                data=DataCard(**{k: _frozen(data[k]) for k in DATA_KEYS},
                              channels=tuple(data.get("channels", ()))),
                patch_size=tuple(payload["patch_size"]), infer=preset.infer)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: not a revmed model checkpoint (no {exc})") from None
        return cls(card, preset, payload.get("state", {}), int(payload.get("epoch", 0)),
                   int(payload.get("step_in_epoch", 0)), dict(payload.get("metrics", {})))


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
