"""Self-describing checkpoints, written atomically, checksummed, loaded without unpickling code.

A checkpoint is a dict of plain values and tensors:

``format``, ``version``, ``revmed`` (package version), ``model`` (``{"kind", "kwargs"}``, enough
to rebuild the generator), ``data`` (intensity mapping, window, SR factors and interpolation,
channels: what inference needs), ``patch_size``, ``preset`` (the whole resolved preset),
``epoch``, ``metrics``, and ``state`` (module, optimiser and scheduler state dicts, RNG states).

On disk (version 2) it is the ordinary ``torch.save`` zip archive of that dict, whose zip comment
(the last 78 bytes of the file) is ``revmed-sha256:`` and the hex SHA-256 of every byte before
it. ``torch.load`` reads the file as it would any checkpoint; ``load_checkpoint`` first checks the
digest, so a truncated file or one with any byte changed is refused as corrupt. Version 1 files
(the same archive without the comment) still load.

Loading uses ``torch.load(..., weights_only=True)``: a file that carries pickled code is refused
instead of run.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

import revmed
from revmed.atomic import atomic_path
from revmed.errors import CheckpointError

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


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format and version fields) to ``path`` atomically, checksummed."""
    path = Path(path)
    full = {"format": FORMAT, "version": VERSION, "revmed": revmed.__version__, **payload}
    buffer = io.BytesIO()
    torch.save(full, buffer)
    sealed = _seal(buffer.getvalue())
    with atomic_path(path) as tmp:
        tmp.write_bytes(sealed)
    return path


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely; ``kind`` (e.g. ``"revgan3d"``) checks the model family.

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
