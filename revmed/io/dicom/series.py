"""The series of a DICOM folder or tree, what each one is, and the volumes each one holds.

Files are grouped by SeriesInstanceUID (a series may span folders; a folder may hold many).
Each series is then sorted into one of three:

* **volumes**: image slices (or frames) that form one 3D volume, or several. A series whose
  frames repeat positions holds several volumes (multi-echo, dynamic, diffusion): it is split
  by the first of these that tells every repeated frame apart, in this order: echo (EchoTime,
  EchoNumbers, EffectiveEchoTime), diffusion (b-value and gradient direction), temporal
  position (TemporalPositionIdentifier / Index, TriggerTime), stack (StackID), image type
  (magnitude, phase, ...) and acquisition (AcquisitionNumber). Each volume is named
  ``echo1``, ``time3``, ``dwi12``, ... in that key's order, and chosen as ``UID:echo1``.
  Repeated frames that no key tells apart are a ``problem`` (refused with one line).
* **passed over** (``skip``): objects that are no volume: localizers (scouts), secondary
  captures without a 3D geometry (exam summaries, dose pages, screenshots), colour images,
  single 2D images, Siemens mosaics (not read), and objects without pixels (structured and dose reports, RT structure
  sets, DICOM-SEG, presentation states). A study run says so and goes on.
* DICOMDIR files (a file set's index) are no series at all; the tree they index is walked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from revmed.io.dicom.frames import Frame, frames_of
from revmed.io.messages import exception_reason
from revmed.io.dicom.headers import (MEDIA_DIRECTORY, NON_IMAGE_CLASSES,
                                     SECONDARY_CAPTURE_CLASSES, index_header, integer,
                                     is_dicom_file, sop_class, sop_class_name, text, values,
                                     walk_files)

#: Keys that split a series holding several volumes, in the order they are tried.
SPLIT_KEYS = ("echo", "dwi", "time", "stack", "type", "acq")


@dataclass(frozen=True)
class VolumePart:
    """One volume of a series: ``token`` names it within the series ("" for a series that is
    one volume), ``label`` says what sets it apart, ``frames`` are its images."""

    token: str
    label: str
    frames: tuple[Frame, ...] = field(repr=False)


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series: its UID, files (name order), labels, and what revmed does with it.

    ``skip`` says why it is passed over (not a volume); ``problem`` why it cannot be read;
    otherwise ``parts`` are its volumes (one, or several for a split series).
    """

    uid: str
    files: tuple[str, ...]
    modality: str = ""
    description: str = ""
    number: str = ""
    kind: str = ""
    skip: str | None = None
    problem: str | None = None
    parts: tuple[VolumePart, ...] = field(default=(), repr=False)

    @property
    def folder(self) -> Path:
        """The folder holding its files (their deepest common folder)."""
        return Path(os.path.commonpath([str(Path(f).parent) for f in self.files]))

    @property
    def selectors(self) -> list[str]:
        """What ``--series`` takes to choose each volume: the UID, or ``UID:token``."""
        return [self.uid if not p.token else f"{self.uid}:{p.token}" for p in self.parts]

    def __str__(self) -> str:
        labels = [self.modality, repr(self.description) if self.description else ""]
        label = " ".join(x for x in labels if x)
        return f"{self.uid} ({len(self.files)} files{', ' + label if label else ''})"


def list_dicom_series(folder: str | os.PathLike, recursive: bool = False) -> list[SeriesInfo]:
    """The DICOM series in ``folder`` (with ``recursive``, in its sub-folders too), in the
    order of their first file. Files that are not DICOM, and DICOMDIR files, are left out."""
    folder = Path(folder)
    if recursive:
        return index_files(walk_files(folder))
    try:
        return index_files(sorted(e for e in folder.iterdir() if not e.name.startswith(".")))
    except OSError:
        return []


#: How many files' headers ``index_files`` keeps, so that finding a tree's cases and then
#: reading each parses every header once (kept while a file's size and time stay the same).
KEPT_HEADERS = 50_000
_HEADERS: dict[str, tuple[tuple, tuple | None]] = {}


def index_files(files: Iterable[Path]) -> list[SeriesInfo]:
    """The series of ``files`` (see ``list_dicom_series``); a DICOM file whose header cannot
    be read is a "series" of its own with no UID and a ``problem`` naming it (it may be a
    slice of any series beside it)."""
    groups: dict[str, list[tuple[str, Dataset, list[Frame]]]] = {}
    damaged = []
    for path in files:
        indexed = _indexed(path)
        if isinstance(indexed, str):
            damaged.append(SeriesInfo("", (str(path),), problem=f"cannot read the DICOM "
                                      f"header of {path} ({indexed})"))
        elif indexed is not None:
            uid, header, frames = indexed
            groups.setdefault(uid, []).append((str(path), header, frames))
    return [describe_series(uid, members) for uid, members in groups.items()] + damaged


def _indexed(path: Path) -> tuple[str, Dataset, list[Frame]] | str | None:
    """``(series UID, header, frames)`` of a DICOM file, None for a file that is no DICOM
    (or a DICOMDIR), the reason as a string for one whose header cannot be read (kept)."""
    try:
        status = path.stat()
    except OSError:
        return None
    signature = (status.st_size, status.st_mtime_ns, status.st_ino)
    kept = _HEADERS.get(str(path))
    if kept is not None and kept[0] == signature:
        return kept[1]
    found: tuple | str | None = None
    if is_dicom_file(path):
        try:
            found = _index(path)
        except Exception as exc:  # noqa: BLE001  damaged values raise many types in pydicom
            found = exception_reason(exc)
    if len(_HEADERS) >= KEPT_HEADERS:
        _HEADERS.clear()
    _HEADERS[str(path)] = (signature, found)
    return found


def _index(path: Path) -> tuple[str, Dataset, list[Frame]] | str | None:
    header, pixels = index_header(path)
    if header is None:
        return "pydicom cannot parse it"
    if sop_class(header) == MEDIA_DIRECTORY:
        return None
    frames = frames_of(header, str(path), pixels) if "Rows" in header else []
    return text(header, "SeriesInstanceUID"), header, frames


def indexed_header(path: str | os.PathLike) -> Dataset | None:
    """What indexing read of the header of ``path`` (``INDEX_TAGS``), or None."""
    found = _indexed(Path(path))
    return found[1] if isinstance(found, tuple) else None


def describe_series(uid: str,
                    members: Sequence[tuple[str, Dataset, list[Frame]]]) -> SeriesInfo:
    """The ``SeriesInfo`` of the files ``members`` (path, header, frames) of one series."""
    members = sorted(members, key=lambda m: m[0])
    header = members[0][1]
    frames = [frame for _, _, found in members for frame in found]
    labels = {"modality": text(header, "Modality"),
              "description": text(header, "SeriesDescription"),
              "number": text(header, "SeriesNumber"),
              "kind": sop_class_name(sop_class(header))}
    files = tuple(path for path, _, _ in members)
    skip = skip_reason(header, frames)
    if skip:
        return SeriesInfo(uid, files, **labels, skip=skip)
    imageless = [path for path, h, found in members
                 if not found and sop_class(h) not in NON_IMAGE_CLASSES]
    if imageless:  # a slice whose header lost its image tags: never read around it
        return SeriesInfo(uid, files, **labels, problem=f"{imageless[0]} belongs to this "
                          "image series but has no image (its header may be damaged)")
    parts, problem = split_volumes(frames)
    return SeriesInfo(uid, files, **labels, problem=problem, parts=tuple(parts))


def skip_reason(header: Dataset, frames: Sequence[Frame]) -> str | None:
    """Why a series whose first header is ``header`` is no volume, or None (module doc)."""
    uid = sop_class(header)
    if uid in NON_IMAGE_CLASSES:
        return f"{NON_IMAGE_CLASSES[uid]}, not an image volume"
    if not frames:
        return f"no image ({sop_class_name(uid)})"
    if "LOCALIZER" in values(header, "ImageType"):
        return "a localizer (scout) series, not a volume"
    if "MOSAIC" in values(header, "ImageType"):
        return ("a Siemens mosaic (a volume's slices tiled in one image), which revmed does "
                "not read; convert it with dcm2niix first")
    if integer(header, "SamplesPerPixel", 1) > 1:
        return "a colour image (a screen capture?), not a grayscale volume"
    placed = {f.position for f in frames if f.position is not None and f.orientation}
    if uid in SECONDARY_CAPTURE_CLASSES and len(placed) < 2:
        return "a secondary capture without 3D geometry (an exam summary or screenshot?)"
    if len(frames) == 1:
        return "a single 2D image; expected a 3D volume"
    return None


def split_volumes(frames: Sequence[Frame]) -> tuple[list[VolumePart], str | None]:
    """``(parts, problem)``: the volumes of a series' ``frames`` (module doc), or why its
    repeated frames cannot be told apart."""
    at = _positions(frames)
    if len(set(at)) == len(at):
        return [VolumePart("", "", tuple(frames))], None
    for key in SPLIT_KEYS:
        parts = _split_by(frames, at, key)
        if parts:
            return parts, None
    repeats = len(at) - len(set(at))
    return [], (f"{len(frames)} images at {len(set(at))} positions ({repeats} at the same "
                "position as another), and no echo, diffusion, temporal position, stack, image type or "
                "acquisition number tells the volumes apart")


def _positions(frames: Sequence[Frame]) -> list[object]:
    """A hashable place of each frame: its position rounded to a micron (its index when it
    has none, so unplaced frames never count as repeats)."""
    return [tuple(np.round(f.position, 3)) if f.position is not None else ("frame", n)
            for n, f in enumerate(frames)]


def _split_by(frames: Sequence[Frame], at: list[object], key: str) -> list[VolumePart]:
    """The volumes of ``frames`` by the value of ``key``, or [] when it does not tell every
    repeated frame apart (a frame lacks it, one value is all, or a value repeats a place)."""
    found: dict[object, list[int]] = {}
    for n, frame in enumerate(frames):
        if key not in frame.keys:
            return []
        found.setdefault(frame.keys[key], []).append(n)
    if len(found) < 2 or any(len(members) < 2 for members in found.values()):
        return []
    for members in found.values():
        if len({at[n] for n in members}) != len(members):
            return []
    order = sorted(found, key=_sort_key(key, found, frames))
    return [VolumePart(f"{key}{n + 1}", _label(key, value),
                       tuple(frames[m] for m in found[value])) for n, value in enumerate(order)]


def _sort_key(key: str, found: dict, frames: Sequence[Frame]):
    """Echoes, time points and acquisitions in their own order; the rest as acquired."""
    if key in ("echo", "time", "acq"):
        return lambda value: tuple(-1e300 if v is None else v for v in
                                   (value if isinstance(value, tuple) else (value,)))
    return lambda value: min(frames[m].instance for m in found[value])


def _label(key: str, value: object) -> str:
    if key == "echo":
        time, echo = value  # type: ignore[misc]
        return f"EchoTime {time:g} ms" if time is not None else f"echo {echo}"
    if key == "dwi":
        bvalue, direction = value  # type: ignore[misc]
        shown = "" if direction is None else " along " + ",".join(f"{v:.3g}" for v in direction)
        return f"b = {bvalue:g} s/mm2{shown}"
    names = {"time": "temporal position", "stack": "stack", "acq": "AcquisitionNumber",
             "type": "ImageType"}
    shown = "\\".join(value) if isinstance(value, tuple) else f"{value:g}" if isinstance(
        value, float) else str(value)
    return f"{names[key]} {shown}"
