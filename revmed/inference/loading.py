"""The predictor of a checkpoint, chosen by its task (``Translator`` for sr and da,
``Segmenter`` for seg), and the checkpoint ``revmed infer`` takes when none is named
(``find_checkpoint``: ``$REVMED_MODEL``, else the newest ``runs/*/best.pt``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from revmed.checkpoint import load_checkpoint
from revmed.errors import InputError
from revmed.inference.predictor import Predictor
from revmed.inference.segmenter import Segmenter
from revmed.inference.translator import Translator


#: The environment variable that names the checkpoint when none is given.
MODEL_ENV = "REVMED_MODEL"
#: The predictor of each preset task.
PREDICTORS: dict[str, type[Predictor]] = {task: cls for cls in (Translator, Segmenter)
                                          for task in cls.tasks}


def load_predictor(path: str | os.PathLike, device: str | torch.device = "cpu",
                   compile: bool | None = None,  # noqa: A002
                   channels_last: bool | None = None) -> Predictor:
    """The ``Translator`` or ``Segmenter`` for the checkpoint at ``path`` (``compile`` and
    ``channels_last``: see ``Predictor.from_checkpoint``)."""
    checkpoint = load_checkpoint(path)
    predictor = PREDICTORS.get(checkpoint.card.task)
    if predictor is None:
        raise InputError(f"{path}: no inference for task {checkpoint.card.task!r}")
    return predictor.from_checkpoint(checkpoint, path, device, compile, channels_last)


def newest_checkpoint(runs_dir: str | os.PathLike = "runs") -> Path | None:
    """The most recently written ``best.pt`` under ``runs_dir/*/``, if any."""
    found = sorted(Path(runs_dir).glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def find_checkpoint(model: str | os.PathLike | None = None) -> Path:
    """``model``, else the checkpoint ``$REVMED_MODEL`` names, else the newest
    ``runs/*/best.pt``; ``InputError`` saying how to give one when there is none."""
    if model is not None:
        return Path(model)
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    newest = newest_checkpoint()
    if newest is None:
        raise InputError(f"no model given: pass --model CKPT, set {MODEL_ENV}, or train one "
                         "(runs/*/best.pt is used by default)")
    return newest
