"""Writing a volume as a derived DICOM image series: one file per slice, in a folder.

The series is new (new Series, SOP Instance and, without a DICOM source, Study UIDs) and marked
``ImageType DERIVED\\SECONDARY``. When the volume was computed from a DICOM series (``like``,
the volume that was read), the patient, study and frame-of-reference tags are copied from that
series' first file, so the result files under the same patient and study and overlays the
source in a viewer; its modality decides the storage class (CT or MR Image Storage, anything
else Secondary Capture).

Geometry comes from the RAS+ affine (converted to DICOM's LPS+): slice ``k`` is the voxels
``(:, :, k)`` with ``ImagePositionPatient`` at voxel ``(0, 0, k)``; the row direction is the
``I`` axis and the column direction the ``J`` axis (``ImageOrientationPatient``), so
``PixelSpacing`` is (J spacing, I spacing); ``SliceThickness`` and ``SpacingBetweenSlices`` are
the ``K`` spacing. A refined super-resolution grid is written as it is. DICOM cannot hold an
in-plane shear or slices tilted off their normal: such an affine is an ``OutputError``.

Voxels are stored as int16 with ``RescaleSlope`` / ``RescaleIntercept``: whole values that fit
(and CT in HU, rounded to 1 HU, as scanners store it) with slope 1 and intercept 0; anything
else spread over the int16 range, a step of ``(max - min) / 65534``.
"""

from __future__ import annotations

import datetime
import io
import warnings
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, MRImageStorage,
                         SecondaryCaptureImageStorage, generate_uid)
from pydicom.valuerep import format_number_as_ds

from revmed.errors import OutputError, RevmedWarning
from revmed.io.dicom.series import list_dicom_series
from revmed.io.folder_write import atomic_folder
from revmed.io.volume import LPS_TO_RAS, Volume, spacing_of

#: Storage class by modality; other modalities are written as Secondary Capture ("OT").
SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
#: Tags copied from the source series: patient, study, frame of reference, and the
#: acquisition tags the CT and MR image modules require.
PATIENT_STUDY_TAGS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "PatientIdentityRemoved",
    "DeidentificationMethod", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "BodyPartExamined", "PatientPosition",
)
MODALITY_TAGS = {
    "CT": ("KVP", "AcquisitionNumber"),
    "MR": ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
           "RepetitionTime", "EchoTime", "EchoTrainLength", "InversionTime", "FlipAngle",
           "MagneticFieldStrength", "SequenceName"),
}
#: Largest deviation from orthonormal direction cosines that DICOM can still describe.
ORTHO_TOL = 1e-4
INT16 = np.iinfo(np.int16)


def dicom_source(volume: Volume) -> tuple[Path, str | None] | None:
    """``(path, selector)`` of the DICOM volume ``volume`` was read from (its first channel
    for ``read_channels``): the folder or file, and the series UID (``UID:token`` for one
    volume of a split series); None when it was not read from DICOM."""
    meta, source = volume.meta, volume.source
    if meta.get("channel_meta"):
        meta, source = meta["channel_meta"][0], meta["channel_sources"][0]
    if meta.get("format") != "dicom" or not source:
        return None
    return Path(source), meta.get("volume") or meta.get("series_uid") or None


def source_files(volume: Volume) -> list[Path]:
    """The files of the DICOM volume ``volume`` was read from, in file name order (none when it
    was not read from DICOM)."""
    found = dicom_source(volume)
    if found is None:
        return []
    path, selector = found
    if not path.is_dir():
        return [path]
    uid = selector.split(":", 1)[0] if selector else None
    infos = list_dicom_series(path)
    if uid is not None and uid not in {info.uid for info in infos}:
        infos = list_dicom_series(path, recursive=True)
    for info in infos:
        for choice, part in zip(info.selectors, info.parts, strict=True):
            if selector is None or choice == selector:
                return list(dict.fromkeys(Path(frame.path) for frame in part.frames))
    return []


def source_header(volume: Volume) -> Dataset | None:
    """The header (no pixels) of the first file of ``volume``'s DICOM source, or None."""
    files = source_files(volume)
    if not files:
        return None
    try:
        return pydicom.dcmread(files[0], stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise OutputError(f"{files[0]}: cannot read the source's DICOM header ({exc})") from exc


def software_version() -> str:
    try:
        return version("revmed")
    except PackageNotFoundError:
        return "unknown"


def write_dicom_series(volume: Volume, folder: str | os.PathLike, like: Volume | None = None,
                       description: str = "", derivation: str = "") -> Path:
    """Write the single-channel ``volume`` ``(1, I, J, K)`` as a derived series in ``folder``
    (one ``NNNN.dcm`` file per slice ``k``), atomically: the folder appears whole or not at
    all, replacing a folder of DICOM files of that name. ``like`` is the volume the result was
    computed from: a DICOM source gives the patient, study and frame of reference (see the
    module doc). ``description`` becomes SeriesDescription, ``derivation``
    DerivationDescription. Returns ``folder``."""
    folder = Path(folder)
    if volume.channels != 1:
        raise OutputError(f"{folder}: a DICOM series holds one channel; the result has "
                          f"{volume.channels}, write it as NIfTI, NRRD or MHA instead")
    row, col, ipps, spacing = plane_geometry(volume.affine, volume.shape[2], folder)
    slope, intercept, stored = rescale(volume.array[0], volume.meta.get("units"), folder)
    template = source_header(like) if like is not None else None
    corrected = volume.meta.get("dicom_geometry")  # the source's slices were resampled
    derivation = "; ".join(x for x in (derivation, corrected and f"source {corrected}") if x)
    base = _series_dataset(template, volume.meta.get("units"), description, derivation)
    base.ImageOrientationPatient = [format_number_as_ds(float(v)) for v in (*row, *col)]
    base.PixelSpacing = [format_number_as_ds(float(spacing[1])),
                         format_number_as_ds(float(spacing[0]))]
    base.SliceThickness = base.SpacingBetweenSlices = format_number_as_ds(float(spacing[2]))
    base.Rows, base.Columns = stored.shape[1], stored.shape[0]  # J, I
    base.RescaleSlope, base.RescaleIntercept = slope, intercept
    normal = np.cross(row, col)
    width = max(4, len(str(len(ipps))))
    with atomic_folder(folder) as tmp:
        for k, ipp in enumerate(ipps):
            ds = _slice_dataset(base, k, ipp, float(ipp @ normal), stored[:, :, k])
            save_dataset(ds, tmp / f"{k + 1:0{width}d}.dcm")
    return folder


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM file: encoded in memory by pydicom, then written by revmed, so
    that a full disk is an ``OSError`` with its number (pydicom re-raises write errors
    without it)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())


def plane_geometry(affine: np.ndarray, slices: int, path: Path):
    """``(row, col, ipps, spacing)`` of a grid's ``slices`` slices: the LPS unit directions
    of the ``I`` and ``J`` axes, the LPS positions ``(slices, 3)`` of voxel ``(0, 0, k)``, and
    the spacing along ``(I, J, K)``. ``OutputError`` for a grid DICOM cannot describe."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = spacing_of(affine)
    if not np.all(np.isfinite(affine)) or np.any(spacing == 0):
        raise OutputError(f"{path}: the volume's affine is degenerate (spacing "
                          f"{spacing.tolist()})")
    axes = LPS_TO_RAS @ affine[:3, :3]  # LPS, one column per voxel axis
    row, col, along = (axes / spacing).T
    if abs(float(row @ col)) > ORTHO_TOL:
        raise OutputError(f"{path}: the volume's I and J axes are not perpendicular (a "
                          "sheared grid); DICOM images cannot hold that, write NIfTI instead")
    if abs(abs(float(along @ np.cross(row, col))) - 1) > ORTHO_TOL:
        raise OutputError(f"{path}: the volume's slices are tilted off their normal (a "
                          "sheared grid); DICOM images cannot hold that, write NIfTI instead")
    origin = LPS_TO_RAS @ affine[:3, 3]
    ipps = origin[None, :] + np.arange(slices)[:, None] * axes[:, 2][None, :]
    return row, col, ipps, spacing


def rescale(array: np.ndarray, units: str | None, path: Path) -> tuple[str, str, np.ndarray]:
    """``(slope, intercept, stored)``: the RescaleSlope and RescaleIntercept (as written,
    decimal strings) and the int16 values ``stored`` (same shape) with
    ``array ~ stored * slope + intercept`` (see the module doc for the choice). A few
    outliers far beyond the rest (a spike) are clipped, with a warning, rather than widen the
    step of every other voxel."""
    if array.size and not np.all(np.isfinite(array)):
        raise OutputError(f"{path}: cannot write NaN or infinite voxels to DICOM")
    lo, hi = _limits(array, units, path)
    whole = bool(np.array_equal(array, np.rint(array)))
    if (whole or units == "HU") and lo >= INT16.min and hi <= INT16.max:
        slope, intercept = "1", "0"
    else:
        steps = float(INT16.max) - float(INT16.min) - 1  # [lo, hi] -> [-32767, 32767]
        slope = format_number_as_ds((hi - lo) / steps) if hi > lo else "1"
        intercept = format_number_as_ds((hi + lo) / 2)
    stored = np.rint((np.clip(array, lo, hi).astype(np.float64) - float(intercept))
                     / float(slope))
    return slope, intercept, np.clip(stored, INT16.min, INT16.max).astype(np.int16)


#: Values beyond the 0.1st / 99.9th percentiles by more than this many times the range
#: between them are outliers a DICOM rescale clips (metal in CT is not: a few thousand HU).
OUTLIER_SPAN = 4.0


def _limits(array: np.ndarray, units: str | None, path: Path) -> tuple[float, float]:
    """The range the int16 rescale covers: all values, or, where a few lie far beyond the
    rest, the robust range (a note says how many were clipped); HU within the int16 range."""
    if not array.size:
        return 0.0, 0.0
    lo, hi = float(array.min()), float(array.max())
    low, high = (float(v) for v in np.percentile(array, [0.1, 99.9], method="nearest"))
    span = max(high - low, 1.0)
    inside = array[(array >= low - OUTLIER_SPAN * span) & (array <= high + OUTLIER_SPAN * span)]
    clip_lo, clip_hi = float(inside.min()), float(inside.max())  # the outermost non-outliers
    if units == "HU":
        clip_lo, clip_hi = max(clip_lo, float(INT16.min)), min(clip_hi, float(INT16.max))
    if (clip_lo, clip_hi) != (lo, hi):
        count = int(np.count_nonzero((array < clip_lo) | (array > clip_hi)))
        warnings.warn(f"{path}: {count} voxel(s) far outside the others' range (from "
                      f"{lo:.6g} to {hi:.6g}) are clipped to [{clip_lo:.6g}, {clip_hi:.6g}] "
                      "so the rest keep a fine DICOM rescale step", RevmedWarning, stacklevel=4)
    return clip_lo, clip_hi


#: The largest value of an IS attribute (SeriesNumber).
MAX_IS = 2**31 - 1


def derived_number(source, offset: int) -> int:
    """The SeriesNumber of a series derived from one numbered ``source``: ``source +
    offset`` where that fits an IS value, else ``offset``."""
    try:
        number = int(str(source).strip()) + offset
    except (TypeError, ValueError):
        return offset
    return number if 0 < number <= MAX_IS else offset


def _series_dataset(template: Dataset | None, units: str | None, description: str,
                    derivation: str) -> Dataset:
    """The tags every slice of a new derived series shares (all but position and pixels)."""
    modality = str(getattr(template, "Modality", "") or "") or ("CT" if units == "HU" else "OT")
    sop_class = SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    _patient_and_study(ds, template, modality)
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.Modality = sop_class, modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = derived_number(getattr(template, "SeriesNumber", None), 1000)
    ds.SeriesDescription = (description or "revmed")[:64]
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "SECONDARY"] + (["AXIAL"] if modality == "CT" else [])
    if derivation:
        ds.DerivationDescription = derivation[:1024]
    ds.Manufacturer = ds.ManufacturerModelName = "revmed"
    ds.SoftwareVersions = software_version()
    if sop_class == SecondaryCaptureImageStorage:
        ds.ConversionType = "WSD"  # workstation
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleType = "HU" if modality == "CT" or units == "HU" else "US"
    return ds


def _patient_and_study(ds: Dataset, template: Dataset | None, modality: str) -> None:
    """Patient, study and frame of reference from ``template``, or a new study without one;
    the acquisition tags the modality's image module requires (empty where unknown)."""
    if template is not None:
        for keyword in PATIENT_STUDY_TAGS + MODALITY_TAGS.get(modality, ()):
            if keyword in template:
                setattr(ds, keyword, template.data_element(keyword).value)
    else:
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid()
        now = datetime.datetime.now()
        ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
                    "AccessionNumber", "ReferringPhysicianName", "PositionReferenceIndicator"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    required = {"CT": {"KVP": "", "AcquisitionNumber": "", "PatientPosition": ""},
                "MR": {"ScanningSequence": "RM", "SequenceVariant": "NONE",
                       "ScanOptions": "", "MRAcquisitionType": "", "EchoTime": "",
                       "EchoTrainLength": "", "PatientPosition": ""}}
    for keyword, value in required.get(modality, {}).items():
        if keyword not in ds:
            setattr(ds, keyword, value)


def _slice_dataset(base: Dataset, k: int, ipp: np.ndarray, location: float,
                   pixels: np.ndarray) -> Dataset:
    """``base`` made slice ``k``: new SOP Instance UID, position, and its ``(I, J)`` pixels."""
    ds = base
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in ipp]
    ds.SliceLocation = format_number_as_ds(location)
    ds.PixelData = np.ascontiguousarray(pixels.T).astype("<i2").tobytes()  # rows = J
    return ds
