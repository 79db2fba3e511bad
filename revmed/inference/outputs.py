"""From a case to its written result: what ``revmed infer`` and ``revmed selfsr`` do per case.

``check_model_outputs`` checks, before any case is read, what the outputs need of the model (a
DICOM image series holds one channel; a DICOM-SEG refers to DICOM inputs; ``--dtype input``
applies to images). ``predict_case`` reads a case (its channel files in the model's channel
order) and predicts it. ``write_prediction`` writes the result with the input's geometry record:
a DICOM series derived from the input's, a DICOM-SEG whose segments are named after the
model's label set, or a volume file in the predictor's voxel type (``output_dtype``: with
``dtype="input"`` the input's integer type where the rounded values fit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from revmed.errors import ConfigError, InputError, OutputError
from revmed.inference.predictor import Predictor
from revmed.inference.segmenter import Segmenter
from revmed.io import Volume, read_channels, read_volume, write_volume
from revmed.io.channels import match_channel_files
from revmed.io.targets import Target

#: Voxel types of image outputs: float32, or the input's integer type (``output_dtype``).
DTYPES = ("float32", "input")


def _quiet(text: str) -> None:
    return None


def check_output_options(dtype: str = "float32", precision: str | None = None) -> None:
    """``InputError`` for a voxel type that is none of ``DTYPES``, or a precision that is
    none of ``revmed.preset.PRECISIONS``: checked before any work."""
    from revmed.preset import PRECISIONS

    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")


def check_model_outputs(predictor: Predictor, fmt: str, targets: Sequence[Target],
                        reverse: bool = False, dtype: str = "float32") -> None:
    """What the outputs in ``fmt`` need of the model, checked before any case is read: one
    channel for a DICOM image series, DICOM inputs for a DICOM-SEG, an image model for
    ``dtype="input"``."""
    check_output_options(dtype)
    segments = isinstance(predictor, Segmenter)
    if segments and dtype != "float32":
        raise ConfigError(f"--dtype {dtype}: applies to image outputs; {predictor.source} "
                          "writes label maps (uint8)")
    if fmt != "dicom":
        return
    data = predictor.card.data
    channels = data.in_channels if reverse else data.out_channels
    if not segments and channels != 1:
        raise OutputError(f"format dicom: a DICOM series holds one channel, and "
                          f"{predictor.source} makes {channels}; choose another format",
                          option="format")
    if segments:
        for target in targets:
            if not target.case.problem and not _is_dicom(target.case.files[0]):
                raise OutputError(f"{target.path}: a DICOM-SEG refers to the DICOM series it "
                                  f"segments, and {target.case.files[0]} is not DICOM; "
                                  "choose another --format")


def _is_dicom(path: Path) -> bool:
    from revmed.io.dicom import is_dicom_file
    from revmed.io.formats import DICOM_SUFFIXES

    return path.is_dir() or path.name.lower().endswith(DICOM_SUFFIXES) or is_dicom_file(path)


def predict_case(predictor: Predictor, target: Target, options: dict[str, Any],
                 dicom_geometry: str = "resample",
                 progress: Callable[[int, int], None] | None = None) -> tuple[Volume, Volume]:
    """Read the case of ``target`` and predict it with ``options`` (``reverse``, ``overlap``,
    ``precision``, ``tiling``); returns ``(input, result)``. A case that could not be found
    whole (``case.problem``) is an ``InputError``."""
    case = target.case
    if case.problem:
        raise InputError(case.problem)
    files = list(case.files)
    if len(files) > 1:
        files = match_channel_files(files, list(predictor.card.data.channels)) or files
    volume = (read_channels(files) if len(files) > 1 else
              read_volume(files[0], case.series, dicom_geometry=dicom_geometry))
    return volume, predictor.predict(volume, progress=progress, **options)


def write_prediction(predictor: Predictor, result: Volume, volume: Volume, path: Path, fmt: str,
                     model_name: str, dtype: str = "float32", note: Callable[[str], None] = _quiet
                     ) -> Path:
    """Write ``result`` (predicted from ``volume`` by the model file ``model_name``) to
    ``path`` as ``fmt``, atomically; returns ``path``. ``note`` hears why an image is written
    as float32 when ``dtype="input"`` could not be kept."""
    from revmed.io.dicom.reader import geometry_record

    result.meta.update(geometry_record(volume))
    if fmt != "dicom":
        return write_volume(result, path, dtype=output_dtype(predictor, result, volume, dtype,
                                                             path, note))
    task, uid = predictor.card.task, volume.meta.get("series_uid")
    extra = {}
    if result.meta.get("units") == "label":  # a DICOM-SEG: its segments' names
        extra["names"] = {value: name for name, value in predictor.card.data.labels.labels.items()}
    return write_volume(result, path, format="dicom", like=volume,
                        description=f"revmed {task} {volume.meta.get('series_description', '')}",
                        derivation=f"revmed {task} with model {model_name}"
                        + (f" from series {uid}" if uid else ""), **extra)


def output_dtype(predictor: Predictor, result: Volume, volume: Volume, dtype: str, path: Path,
                 note: Callable[[str], None] = _quiet) -> type:
    """The voxel type to write ``result`` in: the predictor's, or with ``dtype="input"`` the
    input's integer type when the rounded values fit in it (else float32, said to ``note``)."""
    from revmed.io.stored import stored_dtype

    if dtype != "input":
        return predictor.output_dtype
    stored = stored_dtype(volume)
    if stored is None:
        note(f"{path}: written as float32; {volume.source} is not stored as integers")
        return np.float32
    info, values = np.iinfo(stored), np.rint(result.array)
    if values.min() < info.min or values.max() > info.max:
        note(f"{path}: written as float32; its values ({values.min():g} to {values.max():g}) "
             f"do not fit the input's {stored.name}")
        return np.float32
    return stored
