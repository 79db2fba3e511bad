"""Finding the cases in a folder: the one rule that datasets, ``revmed infer`` and
``revmed eval`` share.

A folder's entries (hidden files and sidecars skipped, ``revmed.io.formats``) are:

* volume files (``case_003.nii.gz``): one case each, named without the format suffix;
* sub-folders: a sub-folder that holds volume files is one case of one file per channel
  (``case_003/t1.nii.gz``, ``case_003/flair.nii.gz``), named after the folder. Any other
  sub-folder holds DICOM: every image series in it and in its sub-folders, at any depth (a
  patient/study/series export), is one case. A sub-folder that is one series is named after
  the folder; otherwise each series is named by its folder's path below the top folder, the
  parts joined by ``__`` (``p01/ct/s3`` -> ``p01__ct__s3``), with ``__`` and its
  SeriesInstanceUID added when one folder holds several series;
* other files: *strays* (DICOM slices, stray files). A folder with strays and no case at all
  is itself one DICOM series; when its files hold several series, each is a case named by
  its SeriesInstanceUID (as are the series among the strays of a folder of cases).

Nothing is skipped silently: a broken symbolic link, or a sub-folder without volume files or
image series (e.g. an empty ``c5.nii.gz/``), is a case whose ``problem`` says what is wrong,
for the caller to report as a failed case. Localizer (scout) series, which are no volume, are
cases whose ``skip`` says so. Two entries with one case name (``a.nii.gz`` and ``a.nrrd``)
are reported, never merged. Datasets (``revmed.data.layout``) take each folder entry as one
case, as ``scan_folder`` sorts them; they do not search DICOM trees.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from revmed.errors import InputError
from revmed.io.channels import match_channel_files
from revmed.io.dicom import SeriesInfo, is_dicomdir, list_dicom_series
from revmed.io.formats import case_name, is_sidecar, volume_suffix
from revmed.io.messages import link_problem


@dataclass(frozen=True)
class CaseSource:
    """What to read for one case of a folder.

    Attributes:
        files: one volume file or DICOM folder, or one file per channel.
        series: the SeriesInstanceUID to read, when the folder holds several series.
        problem: why the case cannot be read (a broken link, a folder without volumes): a
            case that fails, with this as its error.
        skip: why the case is passed over (a localizer series): said, never read.
    """

    files: tuple[Path, ...]
    series: str | None = None
    problem: str | None = None
    skip: str | None = None


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


@dataclass(frozen=True)
class Entry:
    """One entry of a folder listing (``list_folder``).

    Attributes:
        path: the file or folder.
        name: its case name: a volume file's name without its suffix, else its name.
        is_dir: a folder (a symbolic link to one counts as one).
        suffix: a single-file volume's format suffix as written (``.nii.gz``), else ``""``.
        entries: a folder's own entries, as far down as the listing went (else empty).
    """

    path: Path
    name: str
    is_dir: bool
    suffix: str = ""
    entries: tuple[Entry, ...] = ()

    @property
    def is_volume(self) -> bool:
        """A single-file volume (not a folder, and a known volume suffix)."""
        return bool(self.suffix)


def folder_entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` in name order, hidden files and sidecars left out."""
    try:
        return sorted(e for e in Path(folder).iterdir() if not is_sidecar(e))
    except OSError as exc:
        raise InputError(f"{folder}: cannot list folder ({exc})") from exc


def list_folder(folder: str | Path, depth: int = 1) -> tuple[Entry, ...]:
    """The entries of ``folder`` in name order (hidden files and sidecars left out), each
    sub-folder with its own entries listed ``depth - 1`` levels further down: a folder tree
    read once, for checks that need nothing but names."""
    listed = []
    for path in folder_entries(Path(folder)):
        is_dir = path.is_dir()
        suffix = "" if is_dir else (volume_suffix(path) or "")
        below = list_folder(path, depth - 1) if is_dir and depth > 1 else ()
        listed.append(Entry(path, path.name[: -len(suffix)] if suffix else path.name, is_dir,
                            suffix, below))
    return tuple(listed)


def scan_folder(folder: str | Path) -> FolderScan:
    """Sort the entries of ``folder`` into cases and strays (see the module doc)."""
    scan = FolderScan()
    for entry in list_folder(folder):
        if not entry.is_dir and not entry.is_volume:
            scan.strays.append(entry.path)
        elif entry.name in scan.cases:
            scan.duplicates.append((entry.path, scan.cases[entry.name]))
        else:
            scan.cases[entry.name] = entry.path
    return scan


def channel_files(folder: Path, channels: Sequence[str]) -> list[Path]:
    """The volume files of a per-channel case folder: in ``channels`` order when their names
    match the channels (``revmed.io.channels.match_channel_files``), else all of them in
    name order (the reader's channel check then says what is wrong)."""
    files = sorted(f for f in folder_entries(folder)
                   if not f.is_dir() and volume_suffix(f) is not None)
    return match_channel_files(files, channels) or files


def holds_volume_files(folder: Path) -> bool:
    """Whether ``folder`` holds single-file volumes (a per-channel case, not a DICOM series)."""
    return any(not e.is_dir() and volume_suffix(e) is not None for e in folder_entries(folder))


def find_cases(path: str | Path,
               channels: Sequence[str] = ()) -> dict[str, CaseSource] | None:
    """The cases of ``path``: case name -> ``CaseSource`` (one volume file or DICOM folder,
    or one file per channel in ``channels`` order, with the series to read); None when
    ``path`` is a single volume (a file, or a folder that is one DICOM series).

    Raises ``InputError`` naming the path when it does not exist, is an empty folder, or
    holds two entries with one case name.
    """
    path = Path(path)
    if link_problem(path):
        raise InputError(f"{path}: {link_problem(path)}")
    try:
        path.stat()
    except OSError as exc:
        raise InputError(f"{path}: no such file or folder" if exc.errno == errno.ENOENT
                         else f"{path}: {exc.strerror or exc}") from None
    if not path.is_dir() and is_dicomdir(path):
        path = path.parent  # a DICOMDIR stands for the tree it indexes
    elif not path.is_dir():
        return None
    scan = scan_folder(path)
    if scan.duplicates:
        entry, first = scan.duplicates[0]
        raise InputError(f"{entry}: case {case_name(entry)!r} appears twice (also {first})")
    cases: dict[str, CaseSource] = {}
    for name, entry in scan.cases.items():
        if _holds(entry, path):
            _add(cases, {name: CaseSource((entry,), problem=f"{entry}: a symbolic link to "
                                          f"{path} or a folder above it (a loop)")})
            continue
        _add(cases, _entry_cases(name, entry, channels))
    broken = [e for e in scan.strays if link_problem(e)]
    _add(cases, {e.name: _broken(e) for e in broken})
    strays = [e for e in scan.strays if e not in broken]
    own = list_dicom_series(path) if strays else []
    if not cases:
        if len(own) <= 1 and strays and len(own[0].parts if own else ()) <= 1:
            return None  # one DICOM volume (or none: reading it says what is wrong)
        if not own:
            raise InputError(f"{path}: empty folder; expected volumes or a DICOM series")
    if own and (len(own) > 1 or cases or len(own[0].parts) > 1):
        for info in own:
            _add(cases, _series_cases(path, info, [info.uid], several=True))
    return cases


def _holds(entry: Path, folder: Path) -> bool:
    """Whether the folder link ``entry`` leads to ``folder`` (which holds it) or above it."""
    if not entry.is_symlink() or not entry.is_dir():
        return False
    try:
        target, here = entry.resolve(), folder.resolve()
    except (OSError, RuntimeError):
        return True
    return target == here or target in here.parents


def _add(cases: dict[str, CaseSource], more: dict[str, CaseSource]) -> None:
    for name, case in more.items():
        if name in cases:
            raise InputError(f"{case.files[0]}: case {name!r} appears twice (also "
                             f"{cases[name].files[0]})")
        cases[name] = case


def _broken(entry: Path) -> CaseSource:
    return CaseSource((entry,), problem=f"{entry}: {link_problem(entry)}")


def _entry_cases(name: str, entry: Path, channels: Sequence[str]) -> dict[str, CaseSource]:
    """The cases of one entry of a folder of cases (see the module doc)."""
    if link_problem(entry):
        return {name: _broken(entry)}
    if not entry.is_dir():
        return {name: CaseSource((entry,))}
    if holds_volume_files(entry):
        return {name: CaseSource(tuple(channel_files(entry, channels)))}
    found = [(folder, info, len(infos) > 1) for folder, infos in dicom_folders(entry)
             for info in infos]
    if not found:
        what = ("a folder named like a volume file" if volume_suffix(entry.name)
                else "a folder")
        return {name: CaseSource((entry,), problem=f"{entry}: {what}, holding no volume "
                                                   "file and no DICOM image series")}
    if len(found) == 1 and found[0][0] == entry:
        return _series_cases(entry, found[0][1], [name], several=False)
    cases: dict[str, CaseSource] = {}
    for folder, info, several in found:
        parts = [name, *folder.relative_to(entry).parts] + ([info.uid] if several else [])
        _add(cases, _series_cases(folder, info, parts, several))
    return cases


def _series_cases(folder: Path, info: SeriesInfo, parts: list[str],
                  several: bool) -> dict[str, CaseSource]:
    """The cases of one DICOM series ``info`` in ``folder``, named by ``parts`` joined with
    ``__``: one case, or one per volume of a split series (``...__echo2``), which names its
    series unless ``folder`` holds no other (``several``). A series that is no volume is a
    case passed over (``skip``), one that cannot be read a failed case."""
    name = "__".join(parts)
    if info.skip or info.problem:
        return {name: CaseSource((folder,), series=info.uid if several else None,
                                 skip=info.skip,
                                 problem=info.problem and f"{folder} (series {info.uid}): "
                                                          f"{info.problem}")}
    return {"__".join(parts + ([p.token] if p.token else [])):
            CaseSource((folder,), series=selector if several or p.token else None)
            for selector, p in zip(info.selectors, info.parts, strict=True)}


def dicom_folders(root: Path) -> list[tuple[Path, list[SeriesInfo]]]:
    """Every folder at or below ``root`` (hidden ones and symbolic links to folders left out)
    with the DICOM series whose files are in it (a series spread over several folders goes
    with their common folder), in name order."""
    by_folder: dict[Path, list[SeriesInfo]] = {}
    for info in list_dicom_series(root, recursive=True):
        by_folder.setdefault(info.folder, []).append(info)
    return sorted(by_folder.items())
