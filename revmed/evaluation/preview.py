"""Greyscale PNG previews: orthogonal slices of several volumes side by side.

A preview is a mosaic with one row per volume (e.g. input, prediction, reference, |error|) and
one column per plane through a common centre voxel ``(i, j, k)``:

* column 1, the ``k`` plane (axial for a usual CT): ``i`` across, ``j`` upwards;
* column 2, the ``j`` plane (coronal): ``i`` across, ``k`` upwards;
* column 3, the ``i`` plane (sagittal): ``j`` across, ``k`` upwards.

Axes are the file's voxel axes, not reoriented to a radiological view. Each slice is stretched
by nearest-neighbour repetition so that its pixels are roughly square in millimetres (a slice
with 4x thicker voxels along one axis repeats each row 4 times). Values map linearly to 0..255
through a per-row window ``(low, high)`` and are clipped. PNGs are written with SimpleITK.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from revmed.errors import OutputError
from revmed.io.atomic import atomic_path
from revmed.io.messages import itk_reason

#: Width in pixels and grey level of the lines between tiles.
GAP, GAP_GREY = 2, 128
#: Small mosaics are enlarged by an integer factor until the tallest tile is at least this high.
MIN_TILE = 128
#: The largest repetition used to correct an anisotropic slice's aspect ratio.
MAX_STRETCH = 8

#: (across axis, upwards axis) of each column's plane, and the axis the plane is normal to.
PLANES = ((0, 1, 2), (0, 2, 1), (1, 2, 0))


def _stretch(spacing_across: float, spacing_up: float) -> tuple[int, int]:
    """Integer repetitions (across, up) that make a slice's pixels about square in mm."""
    if spacing_up >= spacing_across:
        return 1, int(min(MAX_STRETCH, max(1, round(spacing_up / spacing_across))))
    return int(min(MAX_STRETCH, max(1, round(spacing_across / spacing_up)))), 1


def _tile(volume: np.ndarray, plane: tuple[int, int, int], centre: Sequence[int],
          spacing: Sequence[float], window: tuple[float, float]) -> np.ndarray:
    """One uint8 slice ``(rows, columns)`` of an ``(I, J, K)`` volume."""
    across, up, normal = plane
    index: list[object] = [slice(None)] * 3
    index[normal] = int(centre[normal])
    section = volume[tuple(index)]  # 2D, axes (across, up): PLANES lists the smaller first
    image = section.T[::-1]  # rows = up (flipped so that +up is at the top), columns = across
    low, high = window
    scale = 255.0 / (high - low) if high > low else 0.0
    grey = np.clip((image.astype(np.float64) - low) * scale, 0, 255)
    grey = np.nan_to_num(grey, nan=0.0).round().astype(np.uint8)
    rep_across, rep_up = _stretch(float(spacing[across]), float(spacing[up]))
    return np.repeat(np.repeat(grey, rep_up, axis=0), rep_across, axis=1)


def mosaic(rows: Sequence[np.ndarray], windows: Sequence[tuple[float, float]],
           centre: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A uint8 ``(H, W)`` mosaic of orthogonal slices, one row per volume.

    ``rows``: ``(I, J, K)`` volumes of one shape; ``windows``: one ``(low, high)`` per row,
    mapped to black and white; ``centre``: the voxel ``(i, j, k)`` the three planes go
    through; ``spacing``: mm along ``(i, j, k)``, for the aspect-ratio correction.
    """
    if len(rows) != len(windows) or not rows:
        raise ValueError("mosaic needs one window per row and at least one row")
    shape = rows[0].shape
    if any(r.shape != shape or r.ndim != 3 for r in rows):
        raise ValueError(f"mosaic rows must be (I, J, K) volumes of one shape, got "
                         f"{[r.shape for r in rows]}")
    centre = [int(np.clip(c, 0, s - 1)) for c, s in zip(centre, shape, strict=True)]
    tiles = [[_tile(v, plane, centre, spacing, w) for plane in PLANES]
             for v, w in zip(rows, windows, strict=True)]
    heights = [t.shape[0] for t in tiles[0]]
    widths = [t.shape[1] for t in tiles[0]]
    zoom = max(1, MIN_TILE // max(heights))
    row_h = max(heights) * zoom
    col_w = [w * zoom for w in widths]
    out = np.full((len(rows) * row_h + (len(rows) - 1) * GAP,
                   sum(col_w) + (len(col_w) - 1) * GAP), GAP_GREY, dtype=np.uint8)
    for r, row in enumerate(tiles):
        y = r * (row_h + GAP)
        x = 0
        for c, tile in enumerate(row):
            big = np.repeat(np.repeat(tile, zoom, axis=0), zoom, axis=1)
            out[y:y + row_h, x:x + col_w[c]] = 0  # black around a smaller tile
            out[y:y + big.shape[0], x:x + big.shape[1]] = big
            x += col_w[c] + GAP
    return out


#: |error| at this percentile is white in a case's preview.
ERROR_PERCENTILE = 99.0


def _centre(shape: Sequence[int], mask: np.ndarray | None) -> tuple[int, int, int]:
    """The centre of the mask's bounding box, else of the volume."""
    if mask is not None and mask.any():
        where = np.argwhere(mask)
        return tuple(int(v) for v in (where.min(axis=0) + where.max(axis=0)) // 2)  # type: ignore
    return tuple(int(s) // 2 for s in shape)  # type: ignore[return-value]


def case_preview(prediction: np.ndarray, reference: np.ndarray, low_res: np.ndarray | None,
                 window: tuple[float, float], mask: np.ndarray | None,
                 spacing: Sequence[float]) -> np.ndarray:
    """The mosaic of one evaluated case: the low-resolution input (on the reference grid, when
    given), the prediction, the reference and ``|prediction - reference|``, first channel of
    each ``(C, I, J, K)`` array, through the centre of ``mask`` (else of the volume).

    Images use ``window``; the error runs from 0 to its ``ERROR_PERCENTILE`` percentile."""
    error = np.abs(prediction[0].astype(np.float64) - reference[0])
    top = float(np.percentile(error, ERROR_PERCENTILE)) or float(error.max()) or 1.0
    rows = [prediction[0], reference[0], error]
    windows = [window, window, (0.0, top)]
    if low_res is not None:
        rows.insert(0, low_res[0])
        windows.insert(0, window)
    return mosaic(rows, windows, _centre(reference.shape[1:], mask), spacing)


def write_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 ``(H, W)`` greyscale image to ``path`` as PNG, atomically."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W) image, got {image.dtype} {image.shape}")
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(image)), str(tmp),
                            imageIO="PNGImageIO")
    except RuntimeError as exc:  # ITK's writer: a full disk, a vanished folder
        reason = itk_reason(exc).split(" Reason: ")[-1]  # ITK names the temporary file first
        raise OutputError(f"{path}: cannot write the PNG ({reason}); the file is "
                          "unchanged") from None
    return path
