"""A lock on a folder, held by one process at a time, that a crashed process cannot leave stuck.

``FolderLock(folder).acquire()`` takes an exclusive ``flock`` on ``folder/.revmed.lock``. The
kernel drops the lock when the holder exits in any way (a crash, SIGKILL, the out-of-memory
killer), so a lock file left behind is taken over by the next process; it is never "stale".
On NFS, Linux turns ``flock`` into a POSIX lock that the server sees, so the lock also holds
between machines. Where a file system cannot lock at all (e.g. Lustre mounted without
``flock``), the lock is skipped: ``acquire`` then returns False and the folder is unprotected,
as it was before locks existed.

The file records who holds the lock (``pid host``), for the message another process prints.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

from revmed.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no flock; folders are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".revmed.lock"
#: flock errors that mean "this file system cannot lock", not "someone holds the lock".
_UNSUPPORTED = {errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF}


class FolderLock:
    """An exclusive, non-blocking lock on ``folder`` (see the module doc)."""

    def __init__(self, folder: str | os.PathLike, what: str = "revmed",
                 name: str = LOCK_NAME) -> None:
        self.path = Path(folder) / name
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock (the folder must exist); ``OutputError`` when another process holds
        it. Returns False where the file system cannot lock. Taking a held lock again is a
        no-op."""
        if self._fd is not None or fcntl is None:
            return self._fd is not None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read(fd)
                os.close(fd)
                if exc.errno in _UNSUPPORTED:
                    return False
                raise OutputError(self.busy(holder or "a running process")) from None
            # the previous holder may have removed the file between our open and our lock
            if _same_file(fd, self.path):
                break
            os.close(fd)
        with contextlib.suppress(OSError):  # who holds it, for messages: a full disk skips it
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return True

    def busy(self, holder: str) -> str:
        """The message for a lock ``holder`` (``pid N on HOST``) holds."""
        return (f"{self.path.parent}: in use by another {self.what} ({holder}); wait for it "
                "to end, or use another folder")

    def release(self) -> None:
        """Remove the lock file and let the lock go (the removal first, so that a process
        waiting for the lock never takes a file that is about to disappear)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:  # an object dropped without release: the lock goes with it
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class OutputClaim(FolderLock):
    """A lock on one output path (``.NAME.claim`` beside it): two runs that would write the
    same output cannot both go on, and the second says so before any work."""

    def __init__(self, target: str | os.PathLike) -> None:
        from revmed.io.atomic import temporary_stem

        self.target = Path(target)
        parent = self.target.parent if str(self.target.parent) else Path(".")
        super().__init__(parent, "revmed run", f".{temporary_stem(self.target)}.claim")

    def busy(self, holder: str) -> str:
        return (f"{self.target}: another revmed run ({holder}) is writing it; wait for it to "
                "end, or choose another output")


def clear_stale_claim(target: str | os.PathLike) -> None:
    """Remove the claim a killed run left beside the output ``target`` (a claim a live run
    holds is left alone)."""
    claim = OutputClaim(target)
    if not claim.path.exists():
        return
    try:
        claim.acquire()
    except OutputError:
        return
    claim.release()
