"""Self-describing checkpoints, written atomically and loaded without unpickling code.

A checkpoint is a dict of plain values and tensors:

``format``, ``version``, ``revmed`` (package version), ``model`` (``{"kind", "kwargs"}``, enough
to rebuild the generator), ``data`` (intensity mapping, window, SR factors and interpolation,
channels: what inference needs), ``patch_size``, ``preset`` (the whole resolved preset),
``epoch``, ``metrics``, and ``state`` (module, optimiser and scheduler state dicts, RNG states).

Loading uses ``torch.load(..., weights_only=True)``: a file that carries pickled code is refused
instead of run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import revmed
from revmed.atomic import atomic_path
from revmed.errors import CheckpointError

FORMAT = "revmed-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format and version fields) to ``path`` atomically."""
    path = Path(path)
    full = {"format": FORMAT, "version": VERSION, "revmed": revmed.__version__, **payload}
    with atomic_path(path) as tmp:
        torch.save(full, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely; ``kind`` (e.g. ``"revgan3d"``) checks the model family.

    Raises ``CheckpointError`` naming the file when it is missing, not a revmed checkpoint,
    carries code, is from a newer format, or holds another kind of model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds pickled objects other than tensors and plain values (refused)"
        raise CheckpointError(f"{path}: not a loadable revmed checkpoint: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a revmed checkpoint")
    if int(payload.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: written by a newer revmed ({payload.get('revmed')}); "
                              f"this is {revmed.__version__}: upgrade to read it")
    if kind is not None and payload["model"]["kind"] != kind:
        raise CheckpointError(f"{path}: holds a {payload['model']['kind']} model, not {kind}")
    return payload
