"""The pixel values of DICOM frames, decoded by pydicom and rescaled to the modality's units.

Uncompressed pixels (little endian, the syntaxes scanners write) are read straight from the
files at the offsets ``revmed.io.dicom.headers.index_header`` found; everything else
(big endian, deflate, RLE, JPEG baseline, extended and lossless, JPEG-LS, JPEG 2000) goes
through pydicom's decoders, which revmed's dependencies provide (python-gdcm for all of these,
pylibjpeg-openjpeg for JPEG 2000 too). A syntax no installed decoder can read is one
``InputError`` naming it.

Every frame is rescaled with its own RescaleSlope and RescaleIntercept (HU for CT). What a
scanner cannot have meant is an error, never a default: a slope of 0 or one that is not a
number, a file without pixel data, pixel data shorter than its header declares (a truncated
transfer). An RT dose grid's stored integers are multiplied by its DoseGridScaling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from revmed.errors import InputError
from revmed.io.dicom.frames import Frame
from revmed.io.dicom.headers import integer, number, text
from revmed.io.messages import exception_reason, quiet_libraries

#: What the user can install when a compressed syntax has no decoder here.
DECODER_PACKAGES = "python-gdcm or pylibjpeg with pylibjpeg-openjpeg"


def read_pixels(where: str, frames: Sequence[Frame],
                progress: Callable[[int, int], None] | None = None,
                into: np.ndarray | None = None) -> np.ndarray:
    """The rescaled values ``(n, rows, columns)`` float32 of ``frames`` (in that order), or,
    with ``into`` (a float32 ``(columns, rows, n)`` array), written there (frame ``n`` at
    ``into[:, :, n]``) and returned.

    Frames all stored uncompressed (``Frame.raw``) are read straight from their files, a few
    at a time on ``READ_THREADS`` threads; the rest are decoded by pydicom. ``InputError``
    naming ``where`` and the file for anything the module doc lists.
    """
    out = into if into is not None else np.empty(
        (len(frames), frames[0].rows, frames[0].columns), dtype=np.float32)
    if all(frame.raw is not None for frame in frames):
        _read_all_raw(where, frames, out, into is not None, progress)
        return out
    slots: dict[str, list[tuple[int, Frame]]] = {}
    for slot, frame in enumerate(frames):
        slots.setdefault(frame.path, []).append((slot, frame))
    for done, (path, entries) in enumerate(slots.items()):
        dataset = _read(where, path)
        decoded = _decode(where, path, dataset)
        scaling = _dose_scaling(where, path, dataset)
        for slot, frame in entries:
            pixels = decoded[frame.number or 0] if decoded.ndim == 3 else decoded
            slope, intercept = rescale_of(where, frame)
            target = out[:, :, slot] if into is not None else out[slot]
            source = pixels.T if into is not None else pixels
            np.multiply(source, np.float32(slope * scaling), out=target, casting="unsafe")
            if intercept:
                target += np.float32(intercept * scaling)
        if progress is not None:
            progress(done + 1, len(slots))
    return out


#: Threads that read uncompressed frames, and how many frames each takes at a time (enough
#: to write whole cache lines of a ``(columns, rows, n)`` volume).
READ_THREADS, READ_CHUNK = 2, 8


def _read_all_raw(where: str, frames: Sequence[Frame], out: np.ndarray, by_column: bool,
                  progress: Callable[[int, int], None] | None) -> None:
    """Read uncompressed ``frames`` into ``out`` (``(n, rows, columns)``, or ``(columns,
    rows, n)`` when ``by_column``), ``READ_CHUNK`` frames per task."""
    rows, columns = frames[0].rows, frames[0].columns

    def read(start: int) -> int:
        stop = min(start + READ_CHUNK, len(frames))
        values = np.empty((stop - start, rows, columns), dtype=np.float32)
        for m, frame in enumerate(frames[start:stop]):
            slope, intercept = rescale_of(where, frame)
            np.multiply(_read_raw(where, frame), np.float32(slope), out=values[m],
                        casting="unsafe")
            if intercept:
                values[m] += np.float32(intercept)
        if by_column:
            out[:, :, start:stop] = values.transpose(2, 1, 0)
        else:
            out[start:stop] = values
        return stop

    with ThreadPoolExecutor(READ_THREADS) as pool:
        for stop in pool.map(read, range(0, len(frames), READ_CHUNK)):
            if progress is not None:
                progress(stop, len(frames))


def _read_raw(where: str, frame: Frame) -> np.ndarray:
    """The stored values ``(rows, columns)`` of an uncompressed frame, read from its
    ``Frame.raw`` offset; bits above BitsStored are masked off (or carry the sign), as
    pydicom does."""
    raw, count = frame.raw, frame.rows * frame.columns
    size = count * int(raw.dtype[2:])
    try:
        with open(frame.path, "rb") as handle:
            handle.seek(raw.offset)
            data = handle.read(size)
    except OSError as exc:
        raise InputError(f"{where}: cannot read {frame.path} ({exc.strerror or exc})") from None
    if len(data) < size:
        raise InputError(f"{where}: {frame.path} holds {len(data)} bytes of pixel data for "
                         f"{frame.label} where its header declares {size} (a truncated file)")
    return _stored_bits(np.frombuffer(data, raw.dtype).reshape(frame.rows, frame.columns),
                        raw.bits)


def _stored_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` with only their low ``bits`` kept: masked for unsigned types,
    sign-extended for signed ones."""
    unused = values.dtype.itemsize * 8 - bits
    if unused == 0:
        return values
    if values.dtype.kind == "u":
        return values & values.dtype.type((1 << bits) - 1)
    return (values << unused) >> unused


def rescale_of(where: str, frame: Frame) -> tuple[float, float]:
    """``(slope, intercept)`` of ``frame``: 1 and 0 where the file has none; ``InputError``
    for a slope of 0 or a value that is not a finite number."""
    slope = 1.0 if frame.slope is None else frame.slope
    intercept = 0.0 if frame.intercept is None else frame.intercept
    if not np.isfinite(slope) or slope == 0:
        shown = "not a number" if not np.isfinite(slope) else "0"
        raise InputError(f"{where}: {frame.label} has RescaleSlope {shown}; its stored values "
                         "cannot be turned into the modality's units")
    if not np.isfinite(intercept):
        raise InputError(f"{where}: {frame.label} has a RescaleIntercept that is not a number")
    return slope, intercept


def _read(where: str, path: str) -> Dataset:
    try:
        return pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many types on damaged files  # noqa: BLE001
        raise InputError(f"{where}: cannot read {path} ({exception_reason(exc)})") from None


def _decode(where: str, path: str, dataset: Dataset) -> np.ndarray:
    """The stored values of ``dataset``: ``(rows, columns)`` or ``(frames, rows, columns)``."""
    if "PixelData" not in dataset:
        raise InputError(f"{where}: {path} has no pixel data (PixelData is missing)")
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    syntax = pydicom.uid.UID(str(syntax)) if syntax else pydicom.uid.ImplicitVRLittleEndian
    try:
        compressed = syntax.is_compressed
    except ValueError:
        raise InputError(f"{where}: {path} names {str(syntax)!r} as its transfer syntax, "
                         "which is none") from None
    if compressed:
        _check_decoder(where, path, syntax)
    else:
        _check_length(where, path, dataset)
    try:
        with quiet_libraries() as printed:
            return dataset.pixel_array
    except Exception as exc:  # decoders raise many types on damaged data  # noqa: BLE001
        reason = exception_reason(exc) if str(exc) else " ".join(printed[-1:])
        raise InputError(f"{where}: cannot decode the pixel data of {path} ({syntax.name}: "
                         f"{reason})") from None


def _check_decoder(where: str, path: str, syntax: pydicom.uid.UID) -> None:
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise InputError(f"{where}: {path} is compressed with {syntax.name} ({syntax}), and no "
                         f"decoder for it is installed (install {DECODER_PACKAGES})")


def _check_length(where: str, path: str, dataset: Dataset) -> None:
    """``InputError`` when uncompressed pixel data is shorter than the header declares."""
    bits = integer(dataset, "BitsAllocated", 16)
    count = (integer(dataset, "Rows") * integer(dataset, "Columns")
             * max(integer(dataset, "NumberOfFrames", 1), 1)
             * max(integer(dataset, "SamplesPerPixel", 1), 1))
    expected = (count * bits + 7) // 8
    found = len(dataset.PixelData or b"")
    if found < expected:
        raise InputError(f"{where}: {path} holds {found} bytes of pixel data where its header "
                         f"declares {expected} (a truncated file)")


def _dose_scaling(where: str, path: str, dataset: Dataset) -> float:
    """The DoseGridScaling of an RT dose grid (1 for other objects); ``InputError`` when a dose
    grid has none that is a positive number."""
    if text(dataset, "Modality") != "RTDOSE":
        return 1.0
    value = number(dataset, "DoseGridScaling")
    if value is None or value <= 0:
        raise InputError(f"{where}: an RT dose grid without one usable DoseGridScaling "
                         "(needed to turn its stored values into doses)")
    return value
