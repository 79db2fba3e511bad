"""Checking NRRD and MetaImage files before ITK reads them: the compressed voxel data, and the
voxel size the header states.

``payload_problem(path, fmt, expected)`` finds where a file's voxel data starts (after the
header of an attached file, or in the data file a detached header names), decompresses it once
with ``zlib`` or ``bz2`` (which verify the stream's own checksum: CRC-32 for gzip, Adler-32 for
zlib, the block CRCs of bzip2) and says what is wrong: a damaged stream, or one that ends before
``expected`` bytes. The output is counted and dropped chunk by chunk, so a check never holds the
volume, and stops once it has seen more than a volume's worth (a "bomb" cannot make it run on).

Layouts it does not follow (a header longer than 1 MiB, several data files, data at the end of
a file) are left to ITK unchecked; so are uncompressed files, which carry no checksum.

``header_spacing(path, fmt)`` is the voxel size the header states, read as text: ITK replaces
values it cannot use by 1 mm without a word (NRRD ``space directions`` whose norm overflows, a
negative MetaImage ``ElementSpacing``), so revmed compares the two.
"""

from __future__ import annotations

import bz2
import math
import re
import zlib
from pathlib import Path

#: Longest header read.
HEADER_BYTES = 1 << 20
#: Bytes read, and produced, per step.
CHUNK = 1 << 20
#: Output beyond the expected size after which the check stops (the data is whole so far).
SLACK = 16 << 20


def payload_problem(path: Path, fmt: str, expected: int) -> str | None:
    """What is wrong with the voxel data of the NRRD or MetaImage file ``path`` (``fmt``:
    ``"NRRD"`` or ``"MetaImage"``) that should hold ``expected`` bytes: compressed data that
    is damaged, ends early or holds more; uncompressed data of another length. None when
    nothing is (or the layout is not one followed here)."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    found = _nrrd_data(path, head) if fmt == "NRRD" else _meta_data(path, head)
    if found is None:
        return _raw_length_problem(path, head, fmt, expected)
    data_path, offset, codec = found
    try:
        return _stream_problem(data_path, offset, codec, expected)
    except OSError as exc:
        return f"cannot read its voxel data from {data_path} ({exc.strerror or exc})"


def header_spacing(path: Path, fmt: str) -> list[float] | None:
    """The voxel size (mm) per spatial axis that the header of ``path`` states (NRRD
    ``space directions`` or ``spacings``, MetaImage ``ElementSpacing``); None when it states
    none or cannot be parsed here (ITK's defaults then apply)."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    try:
        if fmt == "NRRD":
            end = head.find(b"\n\n")
            fields = _fields(head[:end if end >= 0 else len(head)].decode("latin-1")
                             .splitlines()[1:], ":")
            if "spacedirections" in fields:
                vectors = re.findall(r"\(([^)]*)\)", fields["spacedirections"])
                return [math.hypot(*(float(v) for v in vector.split(","))) for vector in vectors]
            text = fields.get("spacings")
        else:
            end = head.find(b"ElementDataFile")
            fields = _fields(head[:end if end >= 0 else len(head)].decode("latin-1")
                             .splitlines(), "=")
            text = fields.get("elementspacing") or fields.get("elementsize")
    except (ValueError, OverflowError):
        return None
    if not text:
        return None
    try:
        return [float(v) for v in text.split() if v.lower() != "nan"]
    except ValueError:
        return None


def _raw_length_problem(path: Path, head: bytes, fmt: str, expected: int) -> str | None:
    """For an uncompressed file whose voxels follow its header: data of another length than
    ``expected`` (sizes that do not match the data, or a file cut short)."""
    if fmt == "NRRD":
        end = head.find(b"\n\n")
        fields = _fields(head[:max(end, 0)].decode("latin-1").splitlines()[1:], ":")
        attached = end >= 0 and fields.get("encoding", "").lower() in ("raw", "") and \
            "datafile" not in fields and not fields.get("lineskip") and \
            not fields.get("byteskip")
        start = end + 2
    else:
        start = head.find(b"ElementDataFile")
        end = head.find(b"\n", start)
        fields = _fields(head[:max(end, 0)].decode("latin-1").splitlines(), "=")
        attached = start >= 0 and end >= 0 and \
            fields.get("elementdatafile", "").upper() == "LOCAL" and \
            fields.get("compresseddata", "false").lower() != "true" and \
            not fields.get("headersize")
        start = end + 1
    if not attached:
        return None
    held = path.stat().st_size - start
    if held == expected:
        return None
    return (f"its voxel data holds {held} bytes where its header declares {expected} "
            f"({'a truncated file' if held < expected else 'sizes that do not match the data'})")


def header_problem(path: Path, fmt: str) -> str | None:
    """What the header of ``path`` says that ITK would read as something else without a
    word: a MetaImage origin that is not a number (read as 0), a MetaImage TransformMatrix
    that is not a rotation (its scale would multiply the voxel size), a NRRD spatial axis
    whose space direction is ``none`` (read as 1 mm), a NRRD space origin that is not a
    number. None when it says nothing of the kind."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    if fmt == "NRRD":
        end = head.find(b"\n\n")
        fields = _fields(head[:end if end >= 0 else len(head)].decode("latin-1")
                         .splitlines()[1:], ":")
        return _nrrd_header_problem(fields)
    end = head.find(b"ElementDataFile")
    fields = _fields(head[:end if end >= 0 else len(head)].decode("latin-1").splitlines(), "=")
    return _meta_header_problem(fields)


def _numbers(text: str) -> list[float] | None:
    try:
        return [float(v) for v in text.replace(",", " ").replace("(", " ").replace(")", " ")
                .split()]
    except ValueError:
        return None


def _meta_header_problem(fields: dict[str, str]) -> str | None:
    for key in ("offset", "origin", "position"):
        if key in fields:
            values = _numbers(fields[key])
            if values is None or not all(math.isfinite(v) for v in values):
                return f"its {key.capitalize()} ({fields[key]}) is not three numbers"
    for key in ("transformmatrix", "rotation", "orientation"):
        if key not in fields:
            continue
        values = _numbers(fields[key])
        size = math.isqrt(len(values)) if values else 0
        if not values or size * size != len(values) or not all(map(math.isfinite, values)):
            return f"its TransformMatrix ({fields[key]}) is not a matrix of numbers"
        columns = [values[c::size] for c in range(size)]
        for a in range(size):
            for b in range(size):
                dot = sum(x * y for x, y in zip(columns[a], columns[b], strict=True))
                if abs(dot - (a == b)) > 1e-4:
                    return (f"its TransformMatrix ({fields[key]}) is not a rotation (its "
                            "columns must be unit and perpendicular; a scale in it would "
                            "change the voxel size)")
    return None


def _nrrd_header_problem(fields: dict[str, str]) -> str | None:
    if "spaceorigin" in fields:
        values = _numbers(fields["spaceorigin"])
        if values is None or not all(math.isfinite(v) for v in values):
            return f"its space origin ({fields['spaceorigin']}) is not a point"
    directions = fields.get("spacedirections")
    if directions is None:
        return None
    entries = re.findall(r"\([^)]*\)|none", directions)
    kinds = fields.get("kinds", "").split()
    spatial = [k.lower() in ("domain", "space") for k in kinds] if len(kinds) == len(entries) \
        else [True] * len(entries)
    for entry, is_space in zip(entries, spatial, strict=True):
        if is_space and entry == "none":
            return ("a spatial axis has the space direction 'none' (no voxel size or "
                    "direction; ITK would make one up)")
    return None


def _fields(lines: list[str], separator: str) -> dict[str, str]:
    fields = {}
    for line in lines:
        if line.startswith("#") or separator not in line:
            continue
        key, _, value = line.partition(separator)
        fields[key.strip().lower().replace(" ", "")] = value.lstrip("=").strip()
    return fields


def _nrrd_data(path: Path, head: bytes) -> tuple[Path, int, str] | None:
    """``(data file, offset, codec)`` of a compressed NRRD file; None when uncompressed or
    laid out in a way not followed here."""
    end = head.find(b"\n\n")
    if end < 0 and len(head) < HEADER_BYTES:
        end = len(head)  # a detached header (.nhdr) may end without a blank line
    if end < 0:
        return None
    fields = _fields(head[:end].decode("latin-1").splitlines()[1:], ":")
    codec = {"gzip": "zlib", "gz": "zlib", "bzip2": "bz2", "bz2": "bz2"}.get(
        fields.get("encoding", "").lower())
    if codec is None:
        return None
    data_file = fields.get("datafile")
    if data_file:
        if "%" in data_file or data_file.upper().startswith("LIST") or " " in data_file:
            return None
        data_path, offset = path.parent / data_file, 0
    else:
        data_path, offset = path, end + 2
    try:
        lines = int(fields.get("lineskip", "0") or 0)
    except ValueError:
        return None
    return data_path, _after_lines(data_path, offset, lines), codec


def _meta_data(path: Path, head: bytes) -> tuple[Path, int, str] | None:
    """``(data file, offset, codec)`` of a compressed MetaImage file (zlib); None when
    uncompressed or laid out in a way not followed here."""
    start = head.find(b"ElementDataFile")
    end = head.find(b"\n", start)
    if start < 0 or end < 0:
        return None
    fields = _fields(head[:end].decode("latin-1").splitlines(), "=")
    if fields.get("compresseddata", "false").lower() != "true":
        return None
    element = fields.get("elementdatafile", "")
    try:
        skip = int(fields.get("headersize", "0") or 0)
    except ValueError:
        return None
    if element.upper() == "LOCAL":
        return path, end + 1, "zlib"
    if not element or "%" in element or element.upper().startswith("LIST") or skip < 0:
        return None
    return path.parent / element, skip, "zlib"


def _after_lines(path: Path, offset: int, lines: int) -> int:
    """The offset after skipping ``lines`` lines from ``offset`` (NRRD's ``line skip``)."""
    if lines <= 0:
        return offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        for _ in range(lines):
            handle.readline()
        return handle.tell()


def _stream_problem(path: Path, offset: int, codec: str, expected: int) -> str | None:
    # wbits 47: a zlib or a gzip stream, detected from its header
    inflater = zlib.decompressobj(47) if codec == "zlib" else bz2.BZ2Decompressor()
    produced = 0
    with open(path, "rb") as handle:
        handle.seek(offset)
        while not inflater.eof and produced <= expected:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            try:
                produced += _inflate(inflater, chunk, codec)
            except (zlib.error, OSError, EOFError, ValueError) as exc:
                return f"its compressed voxel data is damaged ({exc})"
    if produced > expected:
        return (f"its compressed voxel data holds more than the {expected} bytes its header "
                "declares (sizes that do not match the data)")
    if not inflater.eof:
        return "its compressed voxel data ends early (the file is truncated)"
    if produced < expected:
        return (f"its compressed voxel data holds {produced} bytes where its header declares "
                f"{expected}")
    return None


def _inflate(inflater, chunk: bytes, codec: str) -> int:
    """Bytes ``chunk`` decompresses to, produced ``CHUNK`` at a time and dropped."""
    produced = 0
    if codec == "zlib":
        while chunk and not inflater.eof:
            produced += len(inflater.decompress(chunk, CHUNK))
            chunk = inflater.unconsumed_tail
        return produced
    produced += len(inflater.decompress(chunk, CHUNK))
    while not inflater.eof and not inflater.needs_input:
        produced += len(inflater.decompress(b"", CHUNK))
    return produced
