"""What a DICOM folder or tree holds, series by series, from the headers alone.

``list_volumes`` describes every series under a path (a study export, a DICOMDIR tree, a
PACS dump): its labels, its size, and what revmed does with it: read it as it is, read it
onto a regular grid (and why: gantry tilt, irregular steps), split it into volumes, pass it
over (and why: a localizer, an exam summary, a report) or refuse it (and why). No pixel data
is read, so a tree of thousands of files is listed in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from revmed.errors import InputError
from revmed.io.dicom.headers import text
from revmed.io.dicom.reader import plan_frames
from revmed.io.dicom.series import SeriesInfo, VolumePart, indexed_header, list_dicom_series
from revmed.io.volume import axis_codes


def list_volumes(path: str | os.PathLike, geometry: str = "resample") -> list[dict]:
    """One entry per volume (and per series passed over or refused) under ``path``, a folder
    or a DICOMDIR file (its tree), in the order their files are found. ``geometry`` is the
    ``dicom_geometry`` the volumes would be read with."""
    path = Path(path)
    root = path.parent if path.is_file() else path
    found = list_dicom_series(root, recursive=True)
    if not found:
        raise InputError(f"{path}: no DICOM series found in this folder or below it")
    entries = []
    for info in found:
        labels = _labels(info)
        if info.skip or info.problem:
            action = f"passed over: {info.skip}" if info.skip else f"refused: {info.problem}"
            entries.append({**labels, "action": action})
            continue
        for selector, part in zip(info.selectors, info.parts, strict=True):
            chosen = {"series": selector} if part.token else {}
            entries.append({**labels, **chosen, **_volume(info, part, geometry)})
    return entries


def _labels(info: SeriesInfo) -> dict:
    return {"path": str(info.folder), "series_uid": info.uid, "series_number": info.number,
            "description": info.description, "modality": info.modality, "kind": info.kind,
            "files": len(info.files)}


def _volume(info: SeriesInfo, part: VolumePart, geometry: str) -> dict:
    """The geometry of one volume and what reading it does."""
    entry: dict = {"volume": part.label} if part.token else {}
    entry["slices"] = len(part.frames)
    try:
        grid = plan_frames(str(info.folder), part.frames, geometry)
    except InputError as exc:
        message = str(exc).split(": ", 1)[-1]
        return {**entry, "action": f"refused: {message}"}
    header = indexed_header(part.frames[0].path)
    bits, signed = header.get("BitsAllocated"), header.get("PixelRepresentation")
    entry.update({
        "shape": list(grid.shape),
        "spacing_mm": [round(float(v), 6) for v in grid.spacing],
        "origin_mm_ras": [round(float(v), 6) for v in grid.affine[:3, 3]],
        "direction_ras": [[round(float(v), 6) for v in row]
                          for row in grid.affine[:3, :3] / grid.spacing],
        "axes": axis_codes(grid.affine),
        "tilt_degrees": round(grid.tilt_degrees, 3),
        "slice_steps_mm": sorted({round(float(v), 3) for v in np.atleast_1d(grid.steps_mm)}),
    })
    if bits in (8, 16, 32) and signed in (0, 1):
        entry["stored_dtype"] = f"{'int' if signed else 'uint'}{bits}"
    if text(header, "Modality") == "CT":
        entry["units"] = "HU"
    entry["action"] = f"read, {grid.describe()}" if grid.resampled else "read"
    return entry
