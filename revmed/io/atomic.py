"""Atomic file writes: write to a temporary name beside the target, then rename into place.

A process killed half-way leaves at most a ``.NAME.tmp-*`` file behind, never a truncated file
under the real name, because ``os.replace`` is atomic on POSIX and Windows within one folder.
The data is flushed to disk (``fsync``) before the rename and the folder after it, so the same
holds after a power loss.

A file made this way gets the permissions a plain ``open()`` would give it: those of the file
it replaces, or ``0o666`` less the process's umask for a new one (``mkstemp`` makes its files
``0o600``, which the rename would otherwise keep, hiding results from colleagues on shared
storage). A write that fails for lack of space, quota or a read-only file system raises
``OutputError`` naming the target, and leaves the target as it was.

The temporary name records the host and process that write it
(``.NAME.tmp-HOST-PID-RANDOM``). The next write of the same target removes the leftovers of
processes of this host that no longer run, so re-running a killed job tidies up behind it;
files of running processes and of other hosts (a shared folder) are left alone.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import re
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from revmed.errors import OutputError

#: Suffixes of compression, kept on a temporary name together with the suffix before them.
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


def _kept_suffix(target: Path) -> str:
    """The end of ``target``'s name that its temporary name keeps, so writers that choose a
    format from the suffix (nibabel: ``.nii.gz``) behave the same: the last suffix, and the one
    before it when the last is a compression suffix."""
    suffixes = target.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSION_SUFFIXES:
        return "".join(suffixes[-2:])
    return target.suffix


def sync_path(path: Path) -> None:
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
    folder = check_name_lengths(Path(folder) if str(folder) else Path("."))
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


def check_output_file(path: str | os.PathLike, option: str | None = None) -> Path:
    """Raise ``OutputError`` now if a file cannot be written at ``path`` later: it names a
    folder, its folder does not exist, or files cannot be created there. ``option`` names the
    setting the path came from, for the error's ``option``."""
    path = check_name_lengths(path, option)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name", option=option)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        above = next((p for p in [folder, *folder.parents] if p.exists()), None)
        if above is not None and not above.is_dir():
            raise OutputError(f"{path}: cannot write there: {above} is a file, not a folder",
                              option=option)
        raise OutputError(f"{path}: output folder {folder} does not exist", option=option)
    check_output_folder(folder)
    return path


#: Errors of the destination (a full disk, a quota, a read-only mount) rather than of revmed.
DESTINATION_ERRORS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG", "EIO", "EACCES",
                                      "EPERM", "EISDIR", "ENOTDIR") if hasattr(errno, name))
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc``), else
    set and restored under a lock."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(target: Path) -> int:
    """The permission bits a plain ``open(target, "w")`` leaves: those of an existing
    ``target``, else ``0o666`` less the umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def new_folder_mode() -> int:
    """The permission bits a plain ``mkdir`` gives a new folder: ``0o777`` less the umask
    (``tempfile.mkdtemp`` makes private ``0o700`` folders, which outputs must not keep)."""
    return 0o777 & ~_umask()


def host_name() -> str:
    """This host's name as it goes into temporary names (letters, digits and dots)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:HOST_LENGTH] or "host"


#: Longest name a folder entry may have on the file systems revmed writes to (bytes).
NAME_MAX = 255
#: Room a temporary name takes beyond the target's name: the dot, ``.tmp-``/``.partial-``,
#: the host (at most ``HOST_LENGTH``), the process id, the random part and a kept suffix.
_TEMPORARY_ROOM = 100
HOST_LENGTH = 40


def temporary_stem(target: Path) -> str:
    """The part of ``target``'s name its temporary names start with: the name itself, or for
    a name too long to take a temporary ending, its start and a digest of the whole (the same
    every time, so leftovers are still found and removed)."""
    name = target.name
    if len(os.fsencode(name)) + _TEMPORARY_ROOM <= NAME_MAX:
        return name
    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:16]
    return f"{os.fsdecode(os.fsencode(name)[:80]).rstrip()}~{digest}"


def check_name_lengths(path: str | os.PathLike, option: str | None = None) -> Path:
    """``OutputError`` now, before any work, when a part of ``path`` is longer than a file
    name may be (``NAME_MAX`` bytes, or what the file system says) or the whole path longer
    than a path may be."""
    path = Path(path)
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            break
    else:
        part = None
    probe = path.absolute() if part is None else Path.cwd()
    while not _exists(probe) and probe != probe.parent:
        probe = probe.parent
    limits = {}
    for key, default in (("PC_NAME_MAX", NAME_MAX), ("PC_PATH_MAX", 4096)):
        try:
            limits[key] = min(os.pathconf(probe, key), default * 16)
        except (OSError, ValueError):
            limits[key] = default
    for part in path.parts:
        if len(os.fsencode(part)) > limits["PC_NAME_MAX"]:
            raise OutputError(f"{path}: the name {part[:24]}... is {len(os.fsencode(part))} "
                              f"bytes long; the file system allows {limits['PC_NAME_MAX']}",
                              option=option)
    if len(os.fsencode(str(path.absolute()))) >= limits["PC_PATH_MAX"]:
        raise OutputError(f"{path}: the path is longer than the file system allows "
                          f"({limits['PC_PATH_MAX']} bytes)", option=option)
    return path


def _exists(path: Path) -> bool:
    try:
        path.stat()
    except OSError:
        return False
    return True


def _temporary_prefix(target: Path) -> str:
    """``.NAME.tmp-HOST-PID-``: the start of this process's temporary names for ``target``."""
    return f".{temporary_stem(target)}.tmp-{host_name()}-{os.getpid()}-"


def process_running(pid: int) -> bool:
    """Whether process ``pid`` of this host runs."""
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
    prefix = f".{temporary_stem(target)}.tmp-{host_name()}-"
    removed = []
    for leftover in target.parent.glob(glob.escape(prefix) + "*"):
        pid = leftover.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_running(int(pid)):
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
    remove_stale_temporaries(target)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=_temporary_prefix(target), suffix=_kept_suffix(target), dir=folder
        )
    except OSError as exc:
        raise OutputError(f"{target}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        sync_path(tmp)
        os.chmod(tmp, new_file_mode(target))
        os.replace(tmp, target)
        sync_path(folder)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in DESTINATION_ERRORS:
            raise OutputError(f"{target}: cannot write ({exc.strerror or exc}); the file "
                              "is unchanged") from None
        raise
