"""The 2D images of DICOM files, each with its own place in space and its own rescale.

A classic file (CT Image, MR Image, ...) holds one image; an enhanced multi-frame file
(Enhanced CT/MR, Legacy Converted) holds many, each described by its per-frame functional
groups (position, orientation, pixel spacing, rescale, echo, temporal position, diffusion),
with what all frames share in the shared functional groups; an RT dose grid holds one frame
per ``GridFrameOffsetVector`` entry along the slice normal. ``frames_of`` turns any of them
into ``Frame``s, so that the rest of the reader sees one list of positioned images whatever
the file layout.

A frame also carries the values that can tell several volumes of one series apart
(``Frame.keys``): the echo, the diffusion weighting, the temporal position, the acquisition
and the image type (magnitude, phase, ...). ``revmed.io.dicom.series`` splits on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from pydicom.dataset import Dataset

from revmed.io.dicom.headers import floats, integer, item, number, text, values


@dataclass(frozen=True)
class RawPixels:
    """Where a frame's uncompressed little-endian pixels are in its file, so that they can
    be read without parsing the file again: ``offset`` (bytes), ``dtype`` (``"<u2"``, ...),
    ``bits`` stored (high bits above them are masked off, or carry the sign)."""

    offset: int
    dtype: str
    bits: int


@dataclass(frozen=True)
class Frame:
    """One 2D image of a DICOM file.

    Attributes:
        path: the file.
        number: the frame's index (0-based) in a multi-frame file; None for a single image.
        rows, columns: its pixel size.
        orientation: ImageOrientationPatient ``(6,)`` (row cosines, column cosines), or None.
        position: ImagePositionPatient ``(3,)`` in LPS mm (centre of the first pixel), or None.
        spacing: PixelSpacing ``(2,)`` in mm (between rows, between columns), or None.
        slope, intercept: RescaleSlope / RescaleIntercept (None: absent, read as 1 and 0).
        instance: InstanceNumber (frame number for multi-frame), to order ties.
        keys: the values that tell volumes of one series apart (module doc), by name.
        raw: where its pixels are in the file when they are stored uncompressed (else None:
            they are decoded by pydicom).
    """

    path: str
    number: int | None
    rows: int
    columns: int
    orientation: tuple[float, ...] | None
    position: tuple[float, ...] | None
    spacing: tuple[float, ...] | None
    slope: float | None
    intercept: float | None
    instance: int
    keys: dict[str, object] = field(default_factory=dict, compare=False, hash=False)
    raw: RawPixels | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """The file name, and the frame for multi-frame files, for messages."""
        name = self.path.rsplit("/", 1)[-1]
        return name if self.number is None else f"{name} (frame {self.number + 1})"


def frames_of(header: Dataset, path: str, pixels: int | None = None) -> list[Frame]:
    """The frames of the file ``path`` whose header is ``header``; ``pixels`` is the file
    offset of its uncompressed little-endian pixel data (None: not known, or compressed)."""
    count = integer(header, "NumberOfFrames", 1)
    if "PerFrameFunctionalGroupsSequence" in header or "SharedFunctionalGroupsSequence" in header:
        frames = _enhanced_frames(header, path, max(count, 1))
    else:
        base = _image_frame(header, header, path, None)
        offsets = floats(header, "GridFrameOffsetVector", count)
        frames = [base] if count <= 1 else [_offset_frame(base, k, offsets)
                                            for k in range(count)]
    raw = _raw_pixels(header, pixels)
    if raw is None or text(header, "Modality") == "RTDOSE":  # doses: pydicom's way
        return frames
    size = frames[0].rows * frames[0].columns * int(raw.dtype[2:])
    return [replace(f, raw=RawPixels(raw.offset + k * size, raw.dtype, raw.bits))
            for k, f in enumerate(frames)]


def _raw_pixels(header: Dataset, offset: int | None) -> RawPixels | None:
    """How to read ``header``'s pixels straight from the file at ``offset``: single-sample
    8, 16 or 32-bit integers (None for anything else, which pydicom decodes)."""
    bits, stored = integer(header, "BitsAllocated"), integer(header, "BitsStored")
    if (offset is None or bits not in (8, 16, 32) or not 0 < stored <= bits
            or integer(header, "SamplesPerPixel", 1) != 1):
        return None
    signed = integer(header, "PixelRepresentation") == 1
    return RawPixels(offset, f"<{'i' if signed else 'u'}{bits // 8}", stored)


def _tuple(array: np.ndarray | None) -> tuple[float, ...] | None:
    return None if array is None else tuple(float(v) for v in array)


def _image_frame(header: Dataset, where: Dataset, path: str, frame: int | None) -> Frame:
    """A classic image: every value at the top level of ``header``."""
    return Frame(
        path=path, number=frame,
        rows=integer(header, "Rows"), columns=integer(header, "Columns"),
        orientation=_tuple(floats(where, "ImageOrientationPatient", 6)),
        position=_tuple(floats(where, "ImagePositionPatient", 3)),
        spacing=_tuple(floats(where, "PixelSpacing", 2)),
        slope=_rescale(where, "RescaleSlope"), intercept=_rescale(where, "RescaleIntercept"),
        instance=integer(header, "InstanceNumber"), keys=_classic_keys(header))


def _rescale(header: Dataset, keyword: str) -> float | None:
    """A rescale value; None when absent, NaN when present but not a number (refused later)."""
    if keyword not in header or header.get(keyword) in (None, ""):
        return None
    value = number(header, keyword)
    return float("nan") if value is None else value


def _offset_frame(base: Frame, k: int, offsets: np.ndarray | None) -> Frame:
    """Frame ``k`` of a multi-frame file without functional groups (an RT dose grid): placed
    ``offsets[k]`` mm along the slice normal from the file's position (no offsets: unplaced)."""
    position = None
    if offsets is not None and base.position is not None and base.orientation is not None:
        iop = np.asarray(base.orientation)
        normal = np.cross(iop[:3], iop[3:])
        position = _tuple(np.asarray(base.position) + offsets[k] * normal)
    return Frame(base.path, k, base.rows, base.columns, base.orientation, position,
                 base.spacing, base.slope, base.intercept, k + 1, dict(base.keys))


def _classic_keys(header: Dataset) -> dict[str, object]:
    """The values of a classic image that can tell volumes of one series apart."""
    keys: dict[str, object] = {}
    echo = number(header, "EchoTime")
    if echo is not None or "EchoNumbers" in header:
        keys["echo"] = (echo, integer(header, "EchoNumbers"))
    bvalue = number(header, "DiffusionBValue")
    if bvalue is not None:
        keys["dwi"] = (bvalue, _tuple(floats(header, "DiffusionGradientOrientation", 3)))
    time = next((v for v in (number(header, "TemporalPositionIdentifier"),
                             number(header, "TriggerTime")) if v is not None), None)
    if time is not None:
        keys["time"] = time
    if "AcquisitionNumber" in header:
        keys["acq"] = integer(header, "AcquisitionNumber")
    kinds = values(header, "ImageType")
    if kinds:
        keys["type"] = tuple(kinds[2:]) or tuple(kinds)
    return keys


def _enhanced_frames(header: Dataset, path: str, count: int) -> list[Frame]:
    """The frames of an enhanced multi-frame file, from its functional groups."""
    shared = item(header, "SharedFunctionalGroupsSequence")
    per_frame = header.get("PerFrameFunctionalGroupsSequence") or []
    frames = []
    for k in range(count):
        own = per_frame[k] if k < len(per_frame) else None
        frames.append(_enhanced_frame(header, shared, own, path, k))
    return frames


def _group(own: Dataset | None, shared: Dataset | None, *path: str) -> Dataset | None:
    """A functional group macro: the frame's own where it has one, else the shared one."""
    return item(own, *path) or item(shared, *path)


def _enhanced_frame(header: Dataset, shared: Dataset | None, own: Dataset | None, path: str,
                    k: int) -> Frame:
    position = _group(own, shared, "PlanePositionSequence")
    orientation = _group(own, shared, "PlaneOrientationSequence")
    measures = _group(own, shared, "PixelMeasuresSequence")
    scaling = _group(own, shared, "PixelValueTransformationSequence")
    return Frame(
        path=path, number=k, rows=integer(header, "Rows"), columns=integer(header, "Columns"),
        orientation=_tuple(floats(orientation, "ImageOrientationPatient", 6)),
        position=_tuple(floats(position, "ImagePositionPatient", 3)),
        spacing=_tuple(floats(measures, "PixelSpacing", 2)),
        slope=None if scaling is None else _rescale(scaling, "RescaleSlope"),
        intercept=None if scaling is None else _rescale(scaling, "RescaleIntercept"),
        instance=k + 1, keys=_enhanced_keys(own, shared))


def _enhanced_keys(own: Dataset | None, shared: Dataset | None) -> dict[str, object]:
    """The values of one enhanced frame that can tell volumes apart (module doc)."""
    keys: dict[str, object] = {}
    echo = number(_group(own, shared, "MREchoSequence"), "EffectiveEchoTime")
    if echo is not None:
        keys["echo"] = (echo, 0)
    diffusion = _group(own, shared, "MRDiffusionSequence")
    bvalue = number(diffusion, "DiffusionBValue")
    if bvalue is not None:
        direction = floats(item(diffusion, "DiffusionGradientDirectionSequence"),
                           "DiffusionGradientOrientation", 3)
        keys["dwi"] = (bvalue, _tuple(direction))
    content = _group(own, shared, "FrameContentSequence")
    time = number(content, "TemporalPositionIndex")
    if time is not None:
        keys["time"] = time
    stack = text(content, "StackID") if content is not None else ""
    if stack:
        keys["stack"] = stack
    kinds = values(_group(own, shared, "MRImageFrameTypeSequence")
                   or _group(own, shared, "CTImageFrameTypeSequence"), "FrameType")
    if kinds:
        keys["type"] = tuple(kinds[2:]) or tuple(kinds)
    return keys
