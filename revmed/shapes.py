"""How grid sizes read in messages, tables and logs: ``(64, 64, 32)`` as ``64x64x32``."""

from __future__ import annotations

from collections.abc import Iterable


def shape_text(size: Iterable[int]) -> str:
    """``64x64x32`` for ``(64, 64, 32)`` (any number of axes)."""
    return "x".join(str(int(n)) for n in size)
