"""Sizes of grids and of memory: how they read in messages, and whether they fit.

``shape_text`` writes a grid size as ``64x64x32``; ``format_bytes`` a byte count as
``1.5 GiB``. A header that declares a 4000^3 grid, or a super-resolution whose output grid is
far larger than its input, should fail with one line that gives the estimate, not with the
kernel's out-of-memory killer half-way through a batch: readers call ``require_memory`` with
the size the header declares before reading any voxels, and inference calls it with its
working set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from revmed.errors import InputError

#: Bytes of one float32 voxel, the type every volume is held in.
FLOAT32 = 4


def shape_text(size: Iterable[int]) -> str:
    """``64x64x32`` for ``(64, 64, 32)`` (any number of axes)."""
    return "x".join(str(int(n)) for n in size)


def available_memory() -> int | None:
    """Bytes the system can give this process now (MemAvailable), or None if unknown."""
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


def format_bytes(count: float) -> str:
    """``1536 -> '1.5 KiB'``: binary units, three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


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
