"""Reading a stack of slices onto the regular grid ``revmed.io.dicom.slice_grid`` planned.

Each output slice ``m`` lies between two input slices along the normal (their ``depth``s
around ``m``); its value at an output pixel is the linear blend, by distance along the normal,
of the two slices' values at that pixel's projection onto each of them (where only one of
the two covers the pixel, it is not covered). A slice's value at a
point of its own plane is the bilinear interpolation of its four nearest pixels (exactly the
pixel, when the slice's shift is whole). This is interpolation along the normal between
slices moved within their planes, the way dcm2niix corrects gantry tilt and equalises steps.

Output pixels that no slice covers (the corners a tilted stack leaves, and the border of
less than a pixel beyond a moved slice's first and last pixel) take ``fill``: the stack's smallest value, which for CT is
the scanner's own value outside the field of view.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from revmed.io.dicom.slice_grid import SliceGrid

#: Weights closer than this to 0 or 1 are taken as exactly that (a slice on the grid).
EXACT = 1e-6


def resample_slices(slices: np.ndarray, grid: SliceGrid, fill: float,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The voxels ``(K, J, I)`` float32 of ``grid`` from ``slices`` ``(n, rows, columns)``,
    given in ``grid.order`` (nearest the first slice along the normal first)."""
    columns, rows, count = grid.shape
    out = np.empty((count, rows, columns), dtype=np.float32)
    placed: dict[int, np.ndarray] = {}

    def at(s: int) -> np.ndarray:
        if s not in placed:
            for old in [k for k in placed if k < s - 1]:
                del placed[old]
            placed[s] = place(slices[s], grid.shift[s], (rows, columns), fill)
        return placed[s]

    depth = grid.depth
    for m in range(count):
        below = int(np.clip(np.searchsorted(depth, m + EXACT, side="right") - 1, 0,
                            len(depth) - 1))
        above = min(below + 1, len(depth) - 1)
        weight = 0.0 if above == below else (m - depth[below]) / (depth[above] - depth[below])
        if weight < EXACT:
            out[m] = at(below)
        elif weight > 1 - EXACT:
            out[m] = at(above)
        else:
            np.add(at(below) * np.float32(1 - weight), at(above) * np.float32(weight),
                   out=out[m])
            _fill_outside(out[m], [covered(slices.shape[1:], grid.shift[s], (rows, columns))
                                   for s in (below, above)], fill)
        if progress is not None:
            progress(m + 1, count)
    return out


def covered(size: tuple[int, int], shift: np.ndarray,
            shape: tuple[int, int]) -> tuple[slice, slice]:
    """The ``(rows, columns)`` of a ``shape`` plane that an image of ``size`` placed at
    ``shift`` covers (``place``)."""
    spans = []
    for n, s, limit in zip(size, (shift[1], shift[0]), shape, strict=True):
        start = int(np.floor(s)) + (1 if s - np.floor(s) >= EXACT else 0)
        end = int(np.floor(s)) + n
        spans.append(slice(start, min(end, limit)))
    return spans[0], spans[1]


def _fill_outside(plane: np.ndarray, spans: list[tuple[slice, slice]], fill: float) -> None:
    """Set ``plane`` to ``fill`` outside the pixels every span covers (where one of the two
    slices of a blend has no data, the blend has none either)."""
    rows = slice(max(s[0].start for s in spans), min(s[0].stop for s in spans))
    columns = slice(max(s[1].start for s in spans), min(s[1].stop for s in spans))
    inside = plane[rows, columns].copy() if rows.stop > rows.start and \
        columns.stop > columns.start else None
    plane[...] = fill
    if inside is not None:
        plane[rows, columns] = inside


def place(image: np.ndarray, shift: np.ndarray, shape: tuple[int, int],
          fill: float) -> np.ndarray:
    """``image`` ``(rows, columns)`` on a ``shape`` plane of ``fill``, its first pixel at
    ``shift`` (pixels along columns, rows; >= 0). A fractional shift interpolates bilinearly;
    plane pixels whose place falls outside the image's first and last pixel keep ``fill``."""
    plane = np.full(shape, fill, dtype=np.float32)
    values = image.astype(np.float32, copy=False)
    (di, fi), (dj, fj) = [(int(np.floor(s)), float(s - np.floor(s))) for s in shift]
    if fi >= EXACT:  # plane column di + 1 + x lies fi pixels before image column x + 1
        values, di = (1 - fi) * values[:, 1:] + fi * values[:, :-1], di + 1
    if fj >= EXACT:
        values, dj = (1 - fj) * values[1:] + fj * values[:-1], dj + 1
    rows, columns = min(values.shape[0], shape[0] - dj), min(values.shape[1], shape[1] - di)
    plane[dj:dj + rows, di:di + columns] = values[:rows, :columns]
    return plane
