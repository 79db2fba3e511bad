"""Writing a folder of files (a DICOM series) so that it appears whole or not at all.

``revmed.io.atomic.atomic_path`` makes one file appear at once; a series is many files, so the
whole folder is written under a temporary name beside the target
(``.NAME.partial-HOST-PID-RANDOM``) and renamed into place when every file is flushed. A
process killed half-way leaves only that hidden folder, never a half series under the real
name; the next write of the same target removes what dead processes of this host left.

Replacing an existing folder renames it aside first (``.NAME.old-...``), renames the new one
in, then deletes the old one, so the real name holds the old series or the new one at every
moment. Only a folder of DICOM files is ever replaced (``check_replaceable``): a folder that
holds anything else may be the user's own, and is refused.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from revmed.io.atomic import (DESTINATION_ERRORS, host_name, new_folder_mode, process_running,
                           sync_path, temporary_stem)
from revmed.errors import OutputError
from revmed.io.formats import DICOM_SUFFIXES


def remove_stale_folders(target: Path) -> list[Path]:
    """Remove the temporary folders that dead processes of this host left beside ``target``."""
    removed = []
    for kind in ("partial", "old"):
        prefix = f".{temporary_stem(target)}.{kind}-{host_name()}-"
        for leftover in target.parent.glob(f"{glob.escape(prefix)}*"):
            pid = leftover.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not process_running(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    return removed


def check_replaceable(target: Path) -> None:
    """``OutputError`` unless ``target`` is absent or a folder of DICOM files only (what a
    previous series write left), so replacing it cannot delete anything else."""
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(f"{target}: exists and is not a folder; a DICOM series is written "
                          "as a folder")
    others = [e for e in target.iterdir()
              if not (e.is_file() and e.name.lower().endswith(DICOM_SUFFIXES))]
    if others:
        raise OutputError(f"{target}: holds {others[0].name!r} and perhaps more besides DICOM "
                          "files; only a folder of DICOM files is replaced, choose another")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block succeeds its files are
    flushed and it is renamed to ``path`` (replacing a folder of DICOM files there). If the
    block raises, the temporary folder is removed and ``path`` is untouched."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{target}: output folder {parent} does not exist")
    check_replaceable(target)
    remove_stale_folders(target)
    tag = f"{host_name()}-{os.getpid()}-"
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{temporary_stem(target)}.partial-{tag}",
                                    dir=parent))
    except OSError as exc:
        raise OutputError(f"{target}: cannot write in {parent} ({exc.strerror or exc})") from None
    os.chmod(tmp, new_folder_mode())  # mkdtemp's folders are private
    try:
        yield tmp
        for written in tmp.iterdir():
            sync_path(written)
        sync_path(tmp)
        _move_into_place(tmp, target, tag)
        sync_path(parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in DESTINATION_ERRORS:
            raise OutputError(f"{target}: cannot write ({exc.strerror or exc}); nothing was "
                              "written") from None
        raise


def _move_into_place(tmp: Path, target: Path, tag: str) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is renamed aside, then deleted."""
    if not target.exists():
        os.rename(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{temporary_stem(target)}.old-{tag}",
                                dir=target.parent))
    os.rename(target, old / target.name)  # within one folder tree: atomic
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
