"""DICOM series folders (and single DICOM files) through SimpleITK/GDCM, checked with pydicom.

GDCM finds the series in a folder (files that are not DICOM images are skipped) and orders each
series' slices along the slice normal; ITK applies every slice's RescaleSlope/Intercept, so CT
comes out in Hounsfield units. Before reading the pixels, the slice headers are checked with
pydicom for what GDCM/ITK would silently get wrong:

* mixed slice sizes, missing or non-orthonormal ImageOrientationPatient (GDCM falls back to an
  identity direction), different orientations or several slices at one position, a missing,
  zero or per-slice different PixelSpacing (GDCM reads 0 as 1 mm and takes the first slice's
  for all): ``InputError``;
* uneven slice spacing (typically missing slices) or slices shifted in-plane along the stack
  (gantry tilt): ``RevmedWarning``, since the volume is still usable on an even grid.

RT dose grids (Modality RTDOSE) store integers that DoseGridScaling turns into doses, which
ITK does not apply: revmed does, and sets ``units`` to DoseUnits (``GY`` or ``RELATIVE``).
GDCM's codecs print to the process's standard error (a damaged JPEG 2000 frame prints dozens of
lines); every GDCM call runs under ``quiet_libraries``, so a failure is one error line.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from revmed.errors import InputError, RevmedWarning
from revmed.io.messages import check_regular_file, itk_reason, quiet_libraries
from revmed.io.sitk_convert import volume_from_sitk
from revmed.io.volume import Volume
from revmed.sizes import require_memory, shape_text, voxel_bytes

#: Direction cosines must have unit norm and be perpendicular within this tolerance (GDCM's).
ORTHONORMAL_TOL = 1e-3
#: Largest difference between the ImageOrientationPatient of two slices of one series.
SAME_ORIENTATION_TOL = 1e-3
#: Slices closer than this (mm) along the normal are at the same position.
SAME_POSITION_MM = 1e-3
#: A gap between slices may differ from the median gap by this fraction (plus 1 micron).
GAP_REL_TOL = 0.05
#: PixelSpacing values of two slices of one series may differ by this fraction.
SAME_SPACING_REL = 1e-4
#: Bytes per voxel while DICOM is read: ITK's float32 image, revmed's float32 copy, and the
#: stored slices and buffers GDCM holds on the way (measured: 10.8 for a 400x400x200 CT, 11.4
#: for 256x256x100).
READING_BYTES_PER_VOXEL = 13

_HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesDescription", "Modality", "Rows", "Columns",
    "ImageOrientationPatient", "ImagePositionPatient", "NumberOfFrames", "SamplesPerPixel",
    "RescaleType", "PixelSpacing", "BitsAllocated", "PixelRepresentation", "DoseGridScaling",
    "DoseUnits", "SharedFunctionalGroupsSequence",
]


@dataclass(frozen=True)
class SeriesInfo:
    """One image series of a folder: its UID, its files in slice order, and labels."""

    uid: str
    files: tuple[str, ...]
    modality: str = ""
    description: str = ""

    def __str__(self) -> str:
        labels = [self.modality, repr(self.description) if self.description else ""]
        label = " ".join(x for x in labels if x)
        return f"{self.uid} ({len(self.files)} files{', ' + label if label else ''})"


def is_dicom_file(path: Path) -> bool:
    """True if ``path`` starts with the DICOM preamble and ``DICM`` magic."""
    try:
        if not Path(path).is_file():  # a FIFO would block the read
            return False
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def list_dicom_series(folder: Path) -> list[SeriesInfo]:
    """The DICOM image series directly in ``folder`` (subfolders are not searched).

    Series without pixel rows (structure sets, reports, ...) are left out.
    """
    folder = Path(folder)
    found = []
    with _itk_warnings_off(), quiet_libraries():  # ITK prints "No Series were found"
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        listed = {uid: tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
                  for uid in uids}
    for uid in uids:
        files = listed[uid]
        header = _read_header(files[0]) if files else None
        if header is None or "Rows" not in header:
            continue
        found.append(SeriesInfo(uid, files, str(header.get("Modality", "") or ""),
                                str(header.get("SeriesDescription", "") or "")))
    return found


def read_dicom_series(folder: Path, series: str | None = None) -> Volume:
    """Read one DICOM series from ``folder`` as a ``Volume`` (``(C, I, J, K)`` float32, RAS+).

    ``I`` is the pixel column index (along the row cosines, the first half of
    ImageOrientationPatient), ``J`` the pixel row index (along the column cosines) and ``K`` the
    slice index, increasing along the normal ``row x column``; the three grid axes therefore
    form a right-handed frame. With several series in the folder, ``series`` (a
    SeriesInstanceUID) picks one; without it that is an ``InputError`` listing them.

    ``meta`` gets ``format``, ``series_uid``, ``modality``, ``series_description`` and
    ``units`` (``"HU"`` for CT).
    """
    folder = Path(folder)
    found = list_dicom_series(folder)
    if not found:
        raise InputError(
            f"{folder}: no DICOM image series found in this folder (subfolders are not searched)"
        )
    listing = "; ".join(str(info) for info in found)
    if series is None:
        if len(found) > 1:
            raise InputError(f"{folder}: holds {len(found)} DICOM series: {listing}",
                             fix="series")
        info = found[0]
    else:
        matches = [info for info in found if info.uid == series]
        if not matches:
            raise InputError(f"{folder}: no DICOM series {series!r} here; found {listing}")
        info = matches[0]
    where = f"{folder} (series {info.uid})" if len(found) > 1 else str(folder)
    headers = []
    for name in info.files:
        header = _read_header(name)
        if header is None:
            raise InputError(f"{where}: cannot read the DICOM header of {Path(name).name}")
        headers.append(header)
    _check_geometry(where, headers)
    rows, columns = int(headers[0].get("Rows") or 0), int(headers[0].get("Columns") or 0)
    grid = (columns, rows, len(headers))
    require_memory(where, voxel_bytes(grid, itemsize=READING_BYTES_PER_VOXEL),
                   f"its voxels ({shape_text(grid)})")
    scaling = _dose_scaling(where, headers)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(info.files))
    reader.SetOutputPixelType(_float_pixel_type(headers[0]))
    reader.SetSpacingWarningRelThreshold(1e9)  # _check_geometry warns instead, once, in Python
    try:
        with quiet_libraries() as printed:
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{where}: cannot read the DICOM series "
                         f"({itk_reason(exc) or ' '.join(printed[-1:])})") from exc
    volume = volume_from_sitk(image, str(folder), meta=_meta(headers[0], info.uid))
    return _scaled(volume, scaling)


def read_dicom_file(path: Path) -> Volume:
    """Read one DICOM file holding a whole volume (multi-frame); a single slice is refused."""
    path = Path(path)
    check_regular_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("GDCMImageIO")
    header = _read_header(str(path))
    if header is None or "Rows" not in header:
        raise InputError(f"{path}: not a DICOM image file")
    _check_pixel_spacing(str(path), [_frame_spacing(header)], required=False)
    grid = (int(header.get("Columns") or 0), int(header.get("Rows") or 0),
            int(header.get("NumberOfFrames") or 1))
    require_memory(str(path), voxel_bytes(grid, int(header.get("SamplesPerPixel") or 1),
                                          READING_BYTES_PER_VOXEL),
                   f"its voxels ({shape_text(grid)})")
    scaling = _dose_scaling(str(path), [header])
    reader.SetOutputPixelType(_float_pixel_type(header))
    try:
        with quiet_libraries() as printed:
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read the DICOM file "
                         f"({itk_reason(exc) or ' '.join(printed[-1:])})") from exc
    size = image.GetSize()
    if image.GetDimension() == 2 or (image.GetDimension() == 3 and size[2] == 1):
        raise InputError(
            f"{path}: expected a 3D volume, got a single 2D DICOM slice; "
            "pass the folder holding the whole series"
        )
    uid = str(header.get("SeriesInstanceUID", "") or "")
    return _scaled(volume_from_sitk(image, str(path), meta=_meta(header, uid)), scaling)


def _dose_scaling(where: str, headers: Sequence[pydicom.Dataset]) -> float | None:
    """The DoseGridScaling of an RT dose grid (None for other modalities); ``InputError`` when
    it is missing, not a positive number, or differs between files."""
    if str(headers[0].get("Modality", "") or "") != "RTDOSE":
        return None
    values = set()
    for header in headers:
        try:
            values.add(float(header.get("DoseGridScaling")))
        except (TypeError, ValueError):
            values.add(float("nan"))
    value = values.pop() if len(values) == 1 else float("nan")
    if not (np.isfinite(value) and value > 0):
        raise InputError(f"{where}: an RT dose grid without one usable DoseGridScaling "
                         "(needed to turn its stored values into doses)")
    return value


def _scaled(volume: Volume, scaling: float | None) -> Volume:
    """``volume`` with an RT dose grid's DoseGridScaling applied."""
    if scaling is not None:
        volume.array *= np.float32(scaling)
        volume.meta["dose_grid_scaling"] = scaling
    return volume


@contextlib.contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """Silence ITK's process-wide warning printout for the duration of the block."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _read_header(name: str) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(name, stop_before_pixels=True, force=True, specific_tags=_HEADER_TAGS)
    except Exception:  # pydicom raises many types on damaged headers
        return None


def _float_pixel_type(header: pydicom.Dataset) -> int:
    """float32 output so per-slice rescale slopes are never truncated to integers."""
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    return sitk.sitkVectorFloat32 if samples > 1 else sitk.sitkFloat32


def _meta(header: pydicom.Dataset, uid: str) -> dict:
    modality = str(header.get("Modality", "") or "")
    meta = {
        "format": "dicom",
        "series_uid": uid,
        "modality": modality,
        "series_description": str(header.get("SeriesDescription", "") or ""),
    }
    rescale_type = str(header.get("RescaleType", "") or "")
    if modality == "CT":
        meta["units"] = "HU"
    elif modality == "RTDOSE" and header.get("DoseUnits"):
        meta["units"] = str(header.get("DoseUnits"))
    elif rescale_type and rescale_type != "US":  # "US" = unspecified
        meta["units"] = rescale_type
    bits, signed = header.get("BitsAllocated"), header.get("PixelRepresentation")
    if bits in (8, 16, 32) and signed in (0, 1):
        meta["stored_dtype"] = f"{'int' if signed else 'uint'}{bits}"
    return meta


def _floats(header: pydicom.Dataset, keyword: str, count: int) -> np.ndarray | None:
    value = header.get(keyword)
    try:
        numbers = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.shape == (count,) and np.all(np.isfinite(numbers)) else None


def _check_geometry(where: str, headers: Sequence[pydicom.Dataset]) -> None:
    """Raise ``InputError`` for slices that cannot form one grid; warn for uneven spacing."""
    sizes = sorted({(int(h.get("Rows") or 0), int(h.get("Columns") or 0)) for h in headers})
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sizes)
        raise InputError(f"{where}: the slices have mixed sizes {shown} (rows x columns)")
    _check_pixel_spacing(where, [_frame_spacing(h) for h in headers])
    frames = max(int(h.get("NumberOfFrames", 1) or 1) for h in headers)
    if len(headers) == 1 or frames > 1:
        return  # one slice (refused later as 2D) or multi-frame: geometry is per frame, left to GDCM
    orientations = [_floats(h, "ImageOrientationPatient", 6) for h in headers]
    positions = [_floats(h, "ImagePositionPatient", 3) for h in headers]
    if any(o is None for o in orientations) or any(p is None for p in positions):
        raise InputError(
            f"{where}: some slices lack a valid ImageOrientationPatient or ImagePositionPatient; "
            "cannot place them in space"
        )
    normal = _slice_normal(where, np.stack(orientations))
    _check_positions(where, np.stack(positions), normal)


def _frame_spacing(header: pydicom.Dataset) -> np.ndarray | None:
    """PixelSpacing (between rows, between columns; mm) of a slice, or of the frames of a
    multi-frame file (shared functional groups); None when absent or not two numbers."""
    spacing = _floats(header, "PixelSpacing", 2)
    if spacing is None:
        with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError):
            measures = header.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            spacing = _floats(measures, "PixelSpacing", 2)
    return spacing


def _check_pixel_spacing(where: str, spacings: Sequence[np.ndarray | None],
                         required: bool = True) -> None:
    """``InputError`` when a slice lacks PixelSpacing (unless not ``required``: multi-frame
    files may keep it per frame, where GDCM finds it), has a zero or negative one, or slices
    differ (GDCM reads a missing or zero spacing as 1 mm, and one spacing for all slices)."""
    if any(s is None for s in spacings):
        if not required:
            return
        raise InputError(f"{where}: some slices lack a valid PixelSpacing; cannot size the "
                         "voxels")
    found = np.stack(spacings)  # (n, 2)
    if np.any(found <= 0):
        bad = found[np.any(found <= 0, axis=1)][0]
        raise InputError(f"{where}: PixelSpacing {bad.tolist()} mm is not a voxel size")
    spread = np.abs(found - found[0]).max() / found[0].max()
    if spread > SAME_SPACING_REL:
        shown = ", ".join(sorted({"x".join(f"{v:g}" for v in row) for row in found}))
        raise InputError(f"{where}: the slices have different PixelSpacing ({shown} mm); "
                         "they cannot share one grid")


def _slice_normal(where: str, iop: np.ndarray) -> np.ndarray:
    """The unit slice normal of the orientations ``iop`` ``(n, 6)`` (row cosines, column
    cosines) of a series; ``InputError`` unless they are orthonormal and all the same."""
    row, col = iop[0, :3], iop[0, 3:]
    row_norm, col_norm, dot = np.linalg.norm(row), np.linalg.norm(col), float(row @ col)
    if max(abs(row_norm - 1), abs(col_norm - 1), abs(dot)) > ORTHONORMAL_TOL:
        raise InputError(
            f"{where}: non-orthonormal direction cosines in ImageOrientationPatient "
            f"{np.round(iop[0], 6).tolist()} (norms {row_norm:.4g} and {col_norm:.4g}, "
            f"dot product {dot:.3g})"
        )
    spread = float(np.abs(iop - iop[0]).max())
    if spread > SAME_ORIENTATION_TOL:
        raise InputError(
            f"{where}: the slices have different orientations "
            f"(ImageOrientationPatient differs by up to {spread:.3g})"
        )
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def _check_positions(where: str, ipp: np.ndarray, normal: np.ndarray) -> None:
    """``InputError`` for slices at one position; warnings for uneven spacing and in-plane
    shifts along the stack. ``ipp``: ``(n, 3)`` ImagePositionPatient, LPS mm."""
    along = ipp @ normal
    order = np.argsort(along)
    gaps = np.diff(along[order])
    stacked = int(np.sum(gaps < SAME_POSITION_MM))
    if stacked:
        raise InputError(
            f"{where}: {stacked} slice(s) lie at the same position as another slice; "
            "the series may hold several acquisitions (time points, echoes)"
        )
    usual = float(np.median(gaps))
    even = (along[order[-1]] - along[order[0]]) / (len(ipp) - 1)
    if np.abs(gaps - usual).max() > GAP_REL_TOL * usual + 1e-3:
        missing = int(np.sum(np.maximum(np.rint(gaps / usual) - 1, 0)))
        guess = f"about {missing} slice(s) seem to be missing" if missing else "slices may be missing"
        warnings.warn(
            f"{where}: uneven slice spacing along the slice normal (gaps {gaps.min():.4g} to "
            f"{gaps.max():.4g} mm, median {usual:.4g} mm); {guess}; the volume assumes an even "
            f"spacing of {even:.4g} mm",
            RevmedWarning,
            stacklevel=5,
        )
    extent = ipp[order[-1]] - ipp[order[0]]
    sideways = float(np.linalg.norm(extent - (extent @ normal) * normal))
    if sideways > max(1e-2, 1e-3 * float(np.linalg.norm(extent))):
        warnings.warn(
            f"{where}: the slices shift {sideways:.3g} mm in-plane along the stack (gantry tilt?); "
            "the volume's grid ignores that shear",
            RevmedWarning,
            stacklevel=5,
        )
