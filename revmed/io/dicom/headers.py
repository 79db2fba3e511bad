"""DICOM headers through pydicom: recognising a DICOM file, reading its header, and the few
value conversions every other part of ``revmed.io.dicom`` needs.

Headers are read without pixel data (``stop_before_pixels``): finding and sorting the series
of a tree of thousands of files reads a few kilobytes of each. A header that pydicom cannot
parse is ``None`` here; what that means (a damaged slice, or a stray file) is for the caller
to say.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial

#: Storage classes of the objects a tree holds besides images, by SOP Class UID, as revmed
#: names them when it passes one over. Any other class without pixel rows is "no image".
NON_IMAGE_CLASSES = {
    "1.2.840.10008.1.3.10": "a media directory (DICOMDIR)",
    "1.2.840.10008.5.1.4.1.1.66.4": "a DICOM segmentation (DICOM-SEG)",
    "1.2.840.10008.5.1.4.1.1.481.3": "an RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.5": "an RT plan",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.5.1.4.1.1.88.67": "a radiation dose report",
    "1.2.840.10008.5.1.4.1.1.88.22": "a structured report",
    "1.2.840.10008.5.1.4.1.1.88.33": "a structured report",
    "1.2.840.10008.5.1.4.1.1.88.11": "a structured report",
    "1.2.840.10008.5.1.4.1.1.11.1": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.104.1": "an encapsulated PDF",
}
#: Secondary Capture storage classes: screenshots, exam summaries and dose pages as often as
#: derived volumes; such a series is a volume only when its slices have a 3D geometry.
SECONDARY_CAPTURE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",  # multi-frame SC
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
}
#: The DICOMDIR's storage class (a file set's index, no image).
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
#: What indexing a file reads of it (the rest of the header is skipped unparsed).
INDEX_TAGS = [
    "SOPClassUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality",
    "ImageType", "InstanceNumber", "AcquisitionNumber", "Rows", "Columns", "NumberOfFrames",
    "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "GridFrameOffsetVector",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "DoseUnits", "DoseGridScaling",
    "EchoTime", "EchoNumbers", "DiffusionBValue",
    "DiffusionGradientOrientation", "TemporalPositionIdentifier", "TriggerTime",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "PixelData",
]
_INDEX_TAG_NUMBERS = [pydicom.datadict.tag_for_keyword(k) for k in INDEX_TAGS]
#: Transfer syntaxes whose pixel data are plain little-endian integers, read straight from
#: the file.
RAW_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is a regular file that starts with the DICOM preamble and ``DICM``."""
    try:
        if not Path(path).is_file():  # a FIFO would block the read
            return False
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicomdir(path: str | os.PathLike) -> bool:
    """True if ``path`` is a DICOMDIR: the index of a DICOM file set (no image itself)."""
    if not is_dicom_file(path):
        return False
    header = read_header(path)
    return header is not None and sop_class(header) == MEDIA_DIRECTORY


def index_header(path: str | os.PathLike) -> tuple[Dataset | None, int | None]:
    """``(header, offset)``: the ``INDEX_TAGS`` of ``path`` (None when pydicom cannot parse
    them) and the file offset of its pixel data when they are stored as plain little-endian
    values that the file holds in full (else None).

    A classic image is parsed only up to its image tags (group 0028): its private groups
    (often most of its header) are skipped, and its pixel data, the last element, are found
    from the end of the file. Multi-frame files, whose functional groups follow, are parsed
    to their pixel data.
    """
    try:
        with open(path, "rb") as handle:
            header = read_partial(handle, stop_when=_past_image_tags,
                                  specific_tags=_INDEX_TAG_NUMBERS, force=True)
    except Exception:  # pydicom raises many types on damaged headers  # noqa: BLE001
        return read_header(path), None
    if (integer(header, "NumberOfFrames", 1) > 1 or text(header, "Modality") == "RTDOSE"
            or any(k in sop_class_name(sop_class(header)) for k in ("Enhanced", "Legacy"))):
        return _whole_index_header(path)
    return header, _pixels_at_end(path, header)


def _past_image_tags(tag, vr, length) -> bool:
    return tag.group > 0x0028


def _whole_index_header(path: str | os.PathLike) -> tuple[Dataset | None, int | None]:
    """``index_header`` for a file parsed up to its pixel data (their offset from pydicom)."""
    try:
        header = pydicom.dcmread(path, specific_tags=INDEX_TAGS, defer_size=1024, force=True)
    except Exception:  # pydicom raises many types on damaged headers  # noqa: BLE001
        return read_header(path), None
    if not _raw_syntax(header) or "PixelData" not in header:
        return header, None
    element = header.get_item("PixelData")  # raw (value_tell) or deferred (file_tell)
    offset = getattr(element, "value_tell", None) or getattr(element, "file_tell", None)
    try:
        whole = offset is not None and os.path.getsize(path) >= offset + _pixel_bytes(header)
    except OSError:
        whole = False
    return header, offset if whole else None


def _raw_syntax(header: Dataset) -> bool:
    meta = getattr(header, "file_meta", None)
    return meta is not None and text(meta, "TransferSyntaxUID") in RAW_SYNTAXES


def _pixel_bytes(header: Dataset) -> int:
    """The bytes of uncompressed pixel data ``header`` declares."""
    count = (integer(header, "Rows") * integer(header, "Columns")
             * max(integer(header, "NumberOfFrames", 1), 1)
             * max(integer(header, "SamplesPerPixel", 1), 1))
    return (count * integer(header, "BitsAllocated") + 7) // 8


def _pixels_at_end(path: str | os.PathLike, header: Dataset) -> int | None:
    """The offset of a classic image's uncompressed pixel data when they end its file: the
    bytes before them must be the PixelData element's tag and length (else None)."""
    if not _raw_syntax(header):
        return None
    size = _pixel_bytes(header)
    size += size % 2  # values have even lengths
    explicit = text(header.file_meta, "TransferSyntaxUID") != "1.2.840.10008.1.2"
    lead = 12 if explicit else 8
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            offset = handle.tell() - size
            if offset < lead + 132:
                return None
            handle.seek(offset - lead)
            element = handle.read(lead)
    except OSError:
        return None
    expected = b"\xe0\x7f\x10\x00" + (element[4:6] + b"\0\0" if explicit else b"")
    if element[:len(expected)] != expected or (explicit and element[4:6] not in (b"OW", b"OB")):
        return None
    return offset if int.from_bytes(element[-4:], "little") == size else None


def read_header(path: str | os.PathLike) -> Dataset | None:
    """The header of ``path`` without its pixel data, or None when pydicom cannot parse it."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # pydicom raises many types on damaged headers  # noqa: BLE001
        return None


def text(header: Dataset | None, keyword: str) -> str:
    """The value of ``keyword`` as a string ("" when absent or empty)."""
    value = None if header is None else header.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def values(header: Dataset | None, keyword: str) -> list[str]:
    """The values of a multi-valued ``keyword`` (``ImageType``) as upper-case strings."""
    value = None if header is None else header.get(keyword)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [str(v).strip().upper() for v in items]


def number(header: Dataset | None, keyword: str) -> float | None:
    """``keyword`` as one finite float, or None when absent, empty or not a number."""
    if header is None:
        return None
    value = header.get(keyword)
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if np.isfinite(result) else None


def floats(header: Dataset | None, keyword: str, count: int) -> np.ndarray | None:
    """``keyword`` as ``count`` finite float64 values, or None when it is anything else."""
    if header is None:
        return None
    value = header.get(keyword)
    try:
        result = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return result if result.shape == (count,) and np.all(np.isfinite(result)) else None


def integer(header: Dataset | None, keyword: str, default: int = 0) -> int:
    """``keyword`` as an int (``default`` when absent or not a whole number)."""
    value = number(header, keyword)
    return int(value) if value is not None and value == int(value) else default


def item(header: Dataset | None, *path: str) -> Dataset | None:
    """The first item of nested sequences: ``item(ds, "PlanePositionSequence")``; None when
    any sequence on the way is absent or empty."""
    for keyword in path:
        if header is None:
            return None
        with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError):
            sequence = header.get(keyword)
            header = sequence[0] if sequence else None
            continue
        return None
    return header


def sop_class(header: Dataset) -> str:
    """The SOP Class UID of ``header`` (from the file meta when the data set lacks it)."""
    uid = text(header, "SOPClassUID")
    if not uid:
        meta = getattr(header, "file_meta", None)
        uid = text(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    return uid


def sop_class_name(uid: str) -> str:
    """A readable name of a SOP Class UID (the UID itself when pydicom does not know it)."""
    name = pydicom.uid.UID(uid).name if uid else ""
    return name or uid or "unknown"


def walk_files(root: Path) -> Iterator[Path]:
    """Every file at or below ``root``, in name order; hidden entries and symbolic links to
    folders are left out (so a link loop cannot make the walk endless)."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name
