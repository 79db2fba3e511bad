"""The Python API for scripts, in one place: presets, training, prediction and evaluation.

Everything here is also importable from the module that defines it; this module gathers what a
script needs so that it reads like the command line (docs/api.md has a tested example)::

    from revmed.api import load_predictor, predict_file, evaluate

    predictor = load_predictor("runs/demo/best.pt")
    predict_file(predictor, "scan_lr.nii.gz", "scan_sr.nii.gz")
    report = evaluate("scan_sr.nii.gz", "scan_hr.nii.gz", data_range=1500)

Errors a caller can cause are ``revmed.errors.RevmedError``s naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

from revmed.config import load_preset
from revmed.engine.setup import setup_training
from revmed.engine.signals import TrainingInterrupted
from revmed.engine.trainer import Trainer
from revmed.errors import OutputError, RevmedError
from revmed.evaluation import Report, evaluate, evaluate_regions, write_outputs
from revmed.inference import Predictor, Segmenter, Translator, load_predictor
from revmed.io import Volume, read_channels, read_volume, write_volume
from revmed.runtime import resolve_device
from revmed.selfsr import SelfSRResult, selfsr

__all__ = ["Predictor", "Report", "RevmedError", "Segmenter", "Trainer", "TrainingInterrupted",
           "Translator", "Volume", "evaluate", "evaluate_regions", "load_predictor",
           "load_preset", "predict_file", "read_channels", "read_volume", "resolve_device",
           "SelfSRResult", "selfsr", "setup_training", "write_outputs", "write_volume"]


def predict_file(predictor: Predictor | str | os.PathLike, source: str | os.PathLike,
                 target: str | os.PathLike, *, reverse: bool = False,
                 overwrite: bool = False) -> Path:
    """Read ``source`` (a volume file or a DICOM series folder), predict it with
    ``predictor`` (a ``Predictor``, or a checkpoint path) and write ``target`` atomically
    (NIfTI, NRRD or MHA by its suffix; label maps as uint8). Returns ``target``.

    ``reverse`` runs a RevGAN's G instead of F. An existing ``target`` is an ``OutputError``
    unless ``overwrite``.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: exists", fix="overwrite")
    if not isinstance(predictor, Predictor):
        predictor = load_predictor(predictor)
    result = predictor.predict(read_volume(source), reverse=reverse)
    return write_volume(result, target, dtype=predictor.output_dtype)
