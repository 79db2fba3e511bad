"""Turning library exceptions into the one-line reasons that follow a path in revmed's errors.

nibabel, SimpleITK and pydicom raise exceptions whose text spans several lines and, for ITK,
starts with C++ source locations. Users only need the gist, after the path.
"""

from __future__ import annotations

import re

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
