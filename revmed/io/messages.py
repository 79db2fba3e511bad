"""Turning library exceptions into the one-line reasons that follow a path in revmed's errors,
and keeping the libraries' own printing off the terminal.

nibabel, SimpleITK and pydicom raise exceptions whose text spans several lines and, for ITK,
starts with C++ source locations. Users only need the gist, after the path. Some also print:
GDCM's codecs and MetaIO write to the process's standard error from C++, nibabel logs, NumPy
warns. ``quiet_libraries`` silences all of that around a library call (keeping what the C++
side printed, for the error message), so that an error is always one line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from revmed.errors import InputError, RevmedWarning

#: Longest reason kept; a longer one is cut and ends with an ellipsis.
MAX_REASON = 300

# "Exception thrown in SimpleITK ImageFileReader_Execute: /src/Code/IO/src/x.cxx:91:" and
# bare "/path/file.cxx:91:" lines carry no information for a user.
_ITK_NOISE_LINE = re.compile(r"^(Exception thrown in SimpleITK .*|\S+\.(cxx|hxx|h|cpp|txx):\d+:)$")
# "sitk::ERROR: ", "ITK ERROR: MetaImageIO(0x55dac3b43840): " and "itk::ERROR: ..." prefixes.
_ITK_PREFIX = re.compile(r"^(sitk::ERROR:\s*|(ITK ERROR|itk::ERROR):\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?)")
# MetaIO appends strerror(errno) even when no system call failed.
_STALE_ERRNO = re.compile(r"\s*Reason: (Success|Inappropriate ioctl for device)\b")
# Teem/NRRD stacks one "[nrrd] function: trouble" line per call level; the last one says why.
_NRRD_LINE = re.compile(r"^\[nrrd\]\s*(\w+:\s*)?")


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """``text`` with all whitespace runs (newlines included) collapsed to single spaces."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "\u2026"


def exception_reason(exc: BaseException) -> str:
    """``"ExcType: message"`` on one line, for exceptions of Python libraries."""
    message = one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def itk_reason(exc: BaseException) -> str:
    """The informative part of a SimpleITK ``RuntimeError`` message, on one line."""
    lines, nrrd_reason = [], ""
    for line in str(exc).splitlines():
        line = line.strip()
        if not line or _ITK_NOISE_LINE.match(line):
            continue
        if _NRRD_LINE.match(line):
            nrrd_reason = _NRRD_LINE.sub("", line) or nrrd_reason
            continue
        lines.append(_STALE_ERRNO.sub("", _ITK_PREFIX.sub("", line)))
    if nrrd_reason:
        lines.append(nrrd_reason)
    return one_line(" ".join(lines)) or type(exc).__name__


@contextlib.contextmanager
def quiet_libraries() -> Iterator[list[str]]:
    """Run the block with the process's standard error (file descriptor 2) sent to a temporary
    file, library logging and warnings silenced (revmed's own ``RevmedWarning``s pass), and
    NumPy's floating-point warnings off; yields a list that receives, after the block, the
    lines the block printed there (for an error message)."""
    printed: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing to keep off it
        saved = None
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", RevmedWarning)
        disabled = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        if saved is not None:
            os.dup2(sink.fileno(), 2)
        try:
            with np.errstate(all="ignore"):
                yield printed
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            logging.disable(disabled)
            sink.seek(0)
            printed.extend(line.strip() for line in
                           sink.read(1 << 16).decode(errors="replace").splitlines()
                           if line.strip())


def check_regular_file(path: str | os.PathLike) -> None:
    """``InputError`` unless ``path`` is a regular file (a FIFO or a device would block or
    never end a read)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode)
                else "a device or socket")
        raise InputError(f"{Path(path)}: is {kind}, not a regular file")


def link_problem(path: str | os.PathLike) -> str | None:
    """Why the symbolic link ``path`` leads nowhere (``"broken symbolic link (to x)"`` or
    ``"symbolic link loop (to x)"``), or None when it is no link or leads to something."""
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
        return None
    except OSError as exc:
        kind = "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"{kind} (to {target})"

