"""Atomic file writes: write to a temporary name beside the target, then rename into place.

A process killed half-way leaves at most a ``.NAME.tmp-*`` file behind, never a truncated file
under the real name, because ``os.replace`` is atomic on POSIX and Windows within one folder.
The data is flushed to disk (``fsync``) before the rename and the folder after it, so the same
holds after a power loss.

The temporary name records the host and process that write it
(``.NAME.tmp-HOST-PID-RANDOM``). The next write of the same target removes the leftovers of
processes of this host that no longer run, so re-running a killed job tidies up behind it;
files of running processes and of other hosts (a shared folder) are left alone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from revmed.errors import OutputError

#: Multi-part suffixes kept on the temporary name so format-sniffing writers still see them.
_COMPOUND_SUFFIXES = (".nii.gz", ".tar.gz")


def full_suffix(path: Path) -> str:
    """Return the file-format suffix of ``path``, e.g. ``.nii.gz`` or ``.pt``."""
    name = path.name.lower()
    for suffix in _COMPOUND_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


def _sync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk, so that a rename that survives a
    power loss names complete data. Where a system cannot sync a folder, that part is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Raise ``OutputError`` now if files cannot be created in ``folder`` (or, when it does
    not exist yet, in the nearest existing folder above it, where it would be made).

    Checks by creating and removing a temporary file, which is what a later write will do,
    rather than by permission bits alone (which do not tell for root or for read-only mounts).
    """
    folder = Path(folder) if str(folder) else Path(".")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{folder}: cannot write there: {probe} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".revmed-write-check-", dir=probe)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write there ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(name)
    return folder


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _temporary_prefix(target: Path) -> str:
    """``.NAME.tmp-HOST-PID-``: the start of this process's temporary names for ``target``."""
    return f".{target.name}.tmp-{_host()}-{os.getpid()}-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files that killed processes of this host left beside ``target``;
    returns them."""
    prefix = f".{target.name}.tmp-{_host()}-"
    removed = []
    for leftover in target.parent.glob(glob.escape(prefix) + "*"):
        pid = leftover.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed.append(leftover)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary file keeps the target's suffix (so writers that choose a format from the
    suffix, such as nibabel, behave the same). If the block raises, the temporary file is
    removed and ``path`` is untouched.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{target}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{target}: output folder {folder} is not writable")
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(
        prefix=_temporary_prefix(target), suffix=full_suffix(target), dir=folder
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, target)
        _sync(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
