"""Reading one DICOM volume, from a series folder, a study tree or one multi-frame file.

``read_dicom_series`` finds the series of a folder (the folder's own files first, then, when
they hold none or not the one asked for, every folder below it: a study or a DICOMDIR tree),
chooses the volume (``series`` is a SeriesInstanceUID, or ``UID:token`` for one volume of a
split series, ``revmed.io.dicom.series``), places its slices (``revmed.io.dicom.slice_grid``),
decodes and rescales their pixels (``revmed.io.dicom.pixels``) and, for a stack that is not a
regular grid, reads it onto one (``revmed.io.dicom.resample``) with one ``RevmedWarning``
saying what was corrected and by how much. The result is a ``Volume`` ``(1, I, J, K)``
float32 whose ``I`` runs along the pixel columns (row cosines), ``J`` along the pixel rows and
``K`` along the slice normal; its ``meta`` records the series and any correction
(``dicom_geometry``, ``dicom_correction_mm``), which writers keep with the output.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from revmed.errors import InputError, RevmedWarning
from revmed.io.checks import check_affine
from revmed.io.dicom.frames import Frame
from revmed.io.dicom.headers import text
from revmed.io.dicom.pixels import read_pixels
from revmed.io.dicom.resample import resample_slices
from revmed.io.dicom.seg import read_dicom_seg
from revmed.io.dicom.series import (SeriesInfo, VolumePart, index_files, indexed_header,
                                    list_dicom_series)
from revmed.io.dicom.slice_grid import check_plane, plan_grid
from revmed.io.volume import Volume
from revmed.sizes import require_memory, shape_text, voxel_bytes

#: What pydicom calls the DICOM-SEG storage class (``SeriesInfo.kind``).
SEGMENTATION = "Segmentation Storage"
#: The ``meta`` keys that record a correction of the slices' geometry; writers keep them.
GEOMETRY_KEYS = ("dicom_geometry", "dicom_correction_mm")
#: Bytes per output voxel while DICOM is read onto its own grid (the float32 result, the
#: slices being read, one compressed file's decoded pixels) and while a stack is resampled
#: (its decoded slices, the resampled grid and the final (I, J, K) copy). Measured peaks, a
#: 400 x 400 x 200 int16 series: 128 MiB for a 122 MiB result; tilted, 399 MiB for 195 MiB.
READING_BYTES_PER_VOXEL, RESAMPLING_BYTES_PER_VOXEL = 5, 12


def read_dicom_series(folder: str | Path, series: str | None = None,
                      geometry: str = "resample") -> Volume:
    """Read one volume from the DICOM files in or below ``folder`` (module doc).

    With several volumes there and no ``series``, an ``InputError`` lists them. ``geometry``
    is ``"resample"`` or ``"strict"`` (``revmed.io.dicom.slice_grid``).
    """
    folder = Path(folder)
    found = list_dicom_series(folder)
    wanted = series.split(":", 1)[0] if series else None
    if not found or (wanted and wanted not in {s.uid for s in found}):
        found = list_dicom_series(folder, recursive=True)
    if not found:
        raise InputError(f"{folder}: no DICOM image series found in this folder or below it")
    damaged = [info for info in found if not info.uid and info.problem]
    if damaged:  # it may be a slice of the series asked for: never read around it
        raise InputError(f"{folder}: {damaged[0].problem}")
    segmentations = [info for info in found if info.kind == SEGMENTATION and
                     (series in (None, info.uid)) and len(info.files) == 1]
    if segmentations and (series is not None or len(found) == 1):
        return read_dicom_seg(segmentations[0].files[0], str(folder))
    info, part = _choose(folder, found, series)
    return read_part(_where(info, found), info, part, geometry)


def _where(info: SeriesInfo, found: Sequence[SeriesInfo]) -> str:
    """How messages name the series ``info``: its folder, and its UID when that folder holds
    other series too."""
    others = [s for s in found if s.uid != info.uid and s.folder == info.folder]
    return f"{info.folder} (series {info.uid})" if others else str(info.folder)


def read_dicom_file(path: str | Path, series: str | None = None,
                    geometry: str = "resample") -> Volume:
    """Read the volume one DICOM file holds (a multi-frame file); a single slice, or any
    other file that is no volume, is an ``InputError`` saying what it is."""
    path = Path(path)
    found = index_files([path])
    if not found:
        raise InputError(f"{path}: not a DICOM file revmed can read")
    info = found[0]
    if info.kind == SEGMENTATION:
        return read_dicom_seg(path)
    if info.skip and "single 2D image" in info.skip:
        raise InputError(f"{path}: expected a 3D volume, got a single 2D DICOM slice; pass the "
                         "folder holding the whole series")
    info, part = _choose(path, found, series)
    return read_part(str(path), info, part, geometry)


def _choose(where: Path, found: Sequence[SeriesInfo],
            series: str | None) -> tuple[SeriesInfo, VolumePart]:
    """The series and volume ``series`` names among ``found`` (the only one without it)."""
    if series is not None:
        for info in found:
            for selector, part in zip(info.selectors, info.parts, strict=True):
                if selector == series:
                    return info, part
            if info.uid == series:
                _refuse(where, info)
        raise InputError(f"{where}: no DICOM volume {series!r} here; found {_listing(found)}")
    readable = [(info, part) for info in found for part in info.parts]
    if len(readable) == 1:
        return readable[0]
    if not readable and len(found) == 1:
        _refuse(where, found[0])
    if not readable:
        raise InputError(f"{where}: no DICOM image volume here; found {_listing(found)}")
    return _several(where, found, len(readable))


def _several(where: Path, found: Sequence[SeriesInfo], count: int):
    if len(found) == 1:
        info = found[0]
        raise InputError(f"{where}: series {info.uid} holds {count} volumes "
                         f"({', '.join(p.label for p in info.parts)}); choose one with "
                         f"--series {info.selectors[0]} (to {info.selectors[-1]})")
    raise InputError(f"{where}: holds {count} DICOM volumes: {_listing(found)}", fix="series")


def _refuse(where: Path, info: SeriesInfo):
    """``InputError``: why ``info`` gives no volume (passed over, refused, or split)."""
    if info.skip or info.problem:
        raise InputError(f"{where}: series {info.uid}: {info.skip or info.problem}")
    _several(where, [info], len(info.parts))


def _listing(found: Sequence[SeriesInfo]) -> str:
    shown = []
    for info in found:
        what = (f"passed over: {info.skip}" if info.skip else f"refused: {info.problem}"
                if info.problem else "volumes " + ", ".join(info.selectors)
                if len(info.parts) > 1 else "")
        shown.append(f"{info}" + (f" [{what}]" if what else ""))
    return "; ".join(shown)


def read_part(where: str, info: SeriesInfo, part: VolumePart, geometry: str) -> Volume:
    """Read the volume ``part`` of the series ``info`` (module doc)."""
    frames = part.frames
    grid = plan_frames(where, frames, geometry)
    itemsize = RESAMPLING_BYTES_PER_VOXEL if grid.resampled else READING_BYTES_PER_VOXEL
    require_memory(where, voxel_bytes(grid.shape, itemsize=itemsize),
                   f"its voxels ({shape_text(grid.shape)})")
    ordered = [frames[n] for n in grid.order]
    if grid.resampled:
        stack = read_pixels(where, ordered)  # (n, rows, columns)
        stack = resample_slices(stack, grid, float(stack.min()))  # (K, J, I)
        array = np.ascontiguousarray(stack.transpose(2, 1, 0))[None]  # (1, I, J, K)
        warnings.warn(f"{where}: {grid.describe()}", RevmedWarning, stacklevel=3)
    else:
        array = np.empty((1, *grid.shape), dtype=np.float32)
        read_pixels(where, ordered, into=array[0])
    check_affine(where, grid.affine)
    meta = _meta(indexed_header(frames[0].path), info, part)
    if grid.resampled:
        meta["dicom_geometry"] = grid.describe()
        meta["dicom_correction_mm"] = round(grid.correction_mm, 3)
    return Volume(array, grid.affine, source=where.split(" (series ")[0], meta=meta)


def geometry_record(volume: Volume) -> dict:
    """What ``volume``'s reading corrected (``GEOMETRY_KEYS`` of its meta), for the meta of a
    result computed from it, so that its writer records it too."""
    return {key: volume.meta[key] for key in GEOMETRY_KEYS if key in volume.meta}


def plan_frames(where: str, frames: Sequence[Frame], geometry: str = "resample"):
    """The ``SliceGrid`` of ``frames`` (``InputError`` when they cannot form one)."""
    if any(f.position is None or f.orientation is None for f in frames):
        raise InputError(f"{where}: some slices lack a valid ImageOrientationPatient or "
                         "ImagePositionPatient; cannot place them in space")
    nan2 = (float("nan"),) * 2
    row, col, spacing = check_plane(
        where, np.array([f.orientation for f in frames], dtype=np.float64),
        np.array([f.spacing or nan2 for f in frames], dtype=np.float64),
        {(f.rows, f.columns) for f in frames})
    positions = np.array([f.position for f in frames], dtype=np.float64)
    return plan_grid(where, row, col, spacing, (frames[0].columns, frames[0].rows), positions,
                     geometry)


def _meta(header, info: SeriesInfo, part: VolumePart) -> dict:
    modality = text(header, "Modality")
    meta = {"format": "dicom", "series_uid": info.uid, "modality": modality,
            "series_description": text(header, "SeriesDescription")}
    if part.token:
        meta["volume"] = f"{info.uid}:{part.token}"
        meta["volume_label"] = part.label
    rescale_type = text(header, "RescaleType")
    if modality == "CT":
        meta["units"] = "HU"
    elif modality == "RTDOSE" and text(header, "DoseUnits"):
        meta["units"] = text(header, "DoseUnits")
    elif rescale_type and rescale_type != "US":  # "US" = unspecified
        meta["units"] = rescale_type
    bits, signed = header.get("BitsAllocated"), header.get("PixelRepresentation")
    if bits in (8, 16, 32) and signed in (0, 1):
        meta["stored_dtype"] = f"{'int' if signed else 'uint'}{bits}"
    if modality == "RTDOSE":
        meta["dose_grid_scaling"] = float(header.get("DoseGridScaling"))
    return meta
