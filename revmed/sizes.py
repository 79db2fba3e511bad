"""Sizes of grids and of memory: how they read in messages, and whether they fit.

``shape_text`` writes a grid size as ``64x64x32``; ``format_bytes`` a byte count as
``1.5 GiB``, and ``parse_memory`` reads one as typed (``24GiB``, ``32GB``). A header that
declares a 4000^3 grid, or a super-resolution whose output grid is far larger than its input,
should fail with one line that gives the estimate, not with the kernel's out-of-memory killer
half-way through a batch: readers call ``require_memory`` with the size the header declares
before reading any voxels, and inference calls it with its working set.

What "available" means: the least of what the system can give (``MemAvailable``), what this
process's address-space limit leaves (``ulimit -v``, RLIMIT_AS, which SLURM and batch systems
set), and what its control group's memory limit leaves (cgroup v1 or v2, at every level of the
hierarchy: what SLURM, Docker and Kubernetes set; page cache the kernel can drop counts as
free).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from revmed.errors import InputError

#: Bytes of one float32 voxel, the type every volume is held in.
FLOAT32 = 4


def shape_text(size: Iterable[int]) -> str:
    """``64x64x32`` for ``(64, 64, 32)`` (any number of axes)."""
    return "x".join(str(int(n)) for n in size)


#: Where control groups are mounted, and where a process's are listed.
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
#: cgroup v1 writes "no limit" as a number near 2**63.
_NO_LIMIT = 1 << 60


def available_memory() -> int | None:
    """Bytes this process can allocate now: the least of the system's MemAvailable, the
    address-space limit's room and the control group's room (see the module doc); None if
    none is known."""
    known = [left for left in (system_memory(), address_space_left(), cgroup_memory_left())
             if left is not None]
    return min(known) if known else None


def system_memory() -> int | None:
    """Bytes the system can give now (MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def address_space_left() -> int | None:
    """Bytes the soft RLIMIT_AS leaves above this process's address space (VmSize); None
    without a limit."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(soft - int(line.split()[1]) * 1024, 0)
    except (OSError, ValueError, IndexError):
        pass
    return soft


def cgroup_memory_left(root: Path = CGROUP_ROOT, listing: Path = PROC_CGROUP) -> int | None:
    """Bytes the memory limits of this process's control group, and of each group above it,
    leave (the least of them); None without a limit."""
    try:
        lines = listing.read_text().splitlines()
    except OSError:
        return None
    left = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":  # cgroup v2 (or its half of a hybrid mount)
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
            names = ("memory.max", "memory.current", "inactive_file")
        elif "memory" in parts[1].split(","):
            base = root / "memory"
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        folder = base / parts[2].lstrip("/")
        while True:
            room = _group_room(folder, *names)
            if room is not None:
                left.append(room)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(left) if left else None


def _group_room(folder: Path, limit_file: str, usage_file: str, inactive: str) -> int | None:
    """A control group's limit less its usage (less the page cache it may drop)."""
    try:
        text = (folder / limit_file).read_text().strip()
        if text == "max" or int(text) >= _NO_LIMIT:
            return None
        usage = int((folder / usage_file).read_text().strip())
    except (OSError, ValueError):
        return None
    cache = 0
    try:
        for stat_line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = stat_line.partition(" ")
            if key == inactive:
                cache = int(value)
    except (OSError, ValueError):
        pass
    return max(int(text) - (usage - cache), 0)


def format_bytes(count: float) -> str:
    """``1536 -> '1.5 KiB'``: binary units, three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def parse_memory(text: str) -> int:
    """``"24GiB"`` -> bytes. Binary units (``KiB MiB GiB TiB``, or ``K M G T``), decimal units
    (``kB MB GB TB``), or plain bytes; a decimal point is allowed (``1.5TiB``). ``InputError``
    about the option ``memory`` otherwise, or for zero bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*", str(text),
                         re.IGNORECASE)
    if not match:
        raise InputError(f"memory {text}: expected a size such as 24GiB, 500MiB, 1.5TiB or "
                         "a number of bytes", option="memory")
    number, prefix, binary, unit_b = match.groups()
    prefix = prefix.lower()
    if binary and not prefix:
        raise InputError(f"memory {text}: expected a size such as 24GiB, 500MiB, 1.5TiB or "
                         "a number of bytes", option="memory")
    # "G", "GiB" and "Gi" are binary; "GB" is decimal
    key = prefix + ("b" if unit_b and prefix and not binary else "")
    value = int(float(number) * _UNITS[key])
    if value <= 0:
        raise InputError(f"memory {text}: must be more than zero bytes", option="memory")
    return value


def voxel_bytes(shape: Sequence[int], channels: int = 1, itemsize: int = FLOAT32) -> int:
    """Bytes of a ``(channels, *shape)`` array of ``itemsize``-byte voxels."""
    total = int(channels) * int(itemsize)
    for size in shape:
        total *= int(size)
    return total


def require_memory(source: str, needed: int, what: str) -> None:
    """Raise ``InputError`` naming ``source`` when ``needed`` bytes exceed available memory.

    ``what`` says what the memory is for, e.g. ``"its voxels (512x512x300, 1 channel)"``.
    Does nothing where the available memory cannot be read.
    """
    available = available_memory()
    if available is not None and needed > available:
        raise InputError(f"{source}: {what} need about {format_bytes(needed)} of memory, but "
                         f"only {format_bytes(available)} is available; refused before "
                         "allocating")
