"""Finding the cases in a folder: the one rule that datasets, ``revmed infer`` and
``revmed eval`` share.

A folder's entries (hidden files and sidecars skipped, ``revmed.io.formats``) are:

* volume files (``case_003.nii.gz``): one case each, named without the format suffix;
* sub-folders: one case each, named after the folder. A sub-folder that holds volume files is
  a case of one file per channel (``case_003/t1.nii.gz``, ``case_003/flair.nii.gz``); any
  other sub-folder is a DICOM series;
* other files: *strays*. A folder with strays and no case at all is itself one DICOM series.

Two entries with one case name (``a.nii.gz`` and ``a.nrrd``) are reported, never merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from revmed.errors import InputError
from revmed.io.formats import case_name, is_sidecar, volume_suffix


@dataclass
class FolderScan:
    """What ``scan_folder`` found, entries in name order.

    Attributes:
        cases: case name -> the volume file or sub-folder of that name.
        strays: files that are neither volumes nor sidecars (DICOM slices, stray files).
        duplicates: ``(entry, first)``: an entry whose case name an earlier entry has.
    """

    cases: dict[str, Path] = field(default_factory=dict)
    strays: list[Path] = field(default_factory=list)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)


def folder_entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` in name order, hidden files and sidecars left out."""
    try:
        return sorted(e for e in Path(folder).iterdir() if not is_sidecar(e))
    except OSError as exc:
        raise InputError(f"{folder}: cannot list folder ({exc})") from exc


def scan_folder(folder: str | Path) -> FolderScan:
    """Sort the entries of ``folder`` into cases and strays (see the module doc)."""
    scan = FolderScan()
    for entry in folder_entries(Path(folder)):
        if not entry.is_dir() and volume_suffix(entry) is None:
            scan.strays.append(entry)
            continue
        name = case_name(entry)
        if name in scan.cases:
            scan.duplicates.append((entry, scan.cases[name]))
        else:
            scan.cases[name] = entry
    return scan


def channel_files(folder: Path, channels: Sequence[str]) -> list[Path]:
    """The volume files of a per-channel case folder: in ``channels`` order when the folder
    has one file for each of them, else all of them in name order (the reader's channel check
    then says what is wrong)."""
    files = {case_name(f): f for f in folder_entries(folder)
             if not f.is_dir() and volume_suffix(f) is not None}
    if channels and all(c in files for c in channels):
        return [files[c] for c in channels]
    return [files[n] for n in sorted(files)]


def holds_volume_files(folder: Path) -> bool:
    """Whether ``folder`` holds single-file volumes (a per-channel case, not a DICOM series)."""
    return any(not e.is_dir() and volume_suffix(e) is not None for e in folder_entries(folder))


def find_cases(path: str | Path,
               channels: Sequence[str] = ()) -> dict[str, list[Path]] | None:
    """The cases of ``path``: case name -> the files to read for it (one volume file or DICOM
    folder, or one file per channel in ``channels`` order); None when ``path`` is a single
    volume (a file, or a folder that is one DICOM series).

    Raises ``InputError`` naming the path when it does not exist, is an empty folder, or
    holds two entries with one case name.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not path.is_dir():
        return None
    scan = scan_folder(path)
    if scan.duplicates:
        entry, first = scan.duplicates[0]
        raise InputError(f"{entry}: case {case_name(entry)!r} appears twice (also {first})")
    if not scan.cases:
        if scan.strays:
            return None  # a DICOM series
        raise InputError(f"{path}: empty folder; expected volumes or a DICOM series")
    return {name: (channel_files(entry, channels) if entry.is_dir() and holds_volume_files(entry)
                   else [entry])
            for name, entry in scan.cases.items()}
