"""Putting one volume on another's grid, in world space.

Two files can hold the same physical image in different voxel orders (LAS instead of RAS, the
slices stored head first instead of feet first): their arrays differ, their affines differ, and
the voxels still map to the same points in millimetres. Comparing arrays as they are would
compare different places; comparing grids by shape and spacing alone would miss a shift.

* ``reoriented_like``: ``source`` with its voxel axes reordered and flipped (exactly, no
  interpolation) to run along ``target``'s axes;
* ``same_grid``: whether two volumes' voxels are at the same points;
* ``grid_difference``: how two grids differ, in words;
* ``on_grid_of``: ``source`` on ``target``'s grid: as it is when the grids are equal, exactly
  reordered when they differ only in voxel order, resampled (SimpleITK, linear or nearest
  neighbour) when asked, else ``InputError`` saying how they differ.

Tolerances: axis directions agree to 1e-3, spacings to 1e-3 of a voxel, and every voxel lies
within 1 % of the smallest spacing of where it should.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from revmed.errors import InputError
from revmed.io.sitk_convert import sitk_from_volume, volume_from_sitk
from revmed.io.volume import Volume
from revmed.sizes import shape_text

#: Largest difference of two unit axis directions (cosines), and of spacings (relative).
DIRECTION_TOL = 1e-3
#: Largest distance between where a voxel is and where it should be, in smallest spacings.
POSITION_TOL = 1e-2
RESAMPLE_MODES = ("linear", "nearest")


def reoriented_like(source: Volume, target: Volume) -> Volume | None:
    """``source`` with its spatial axes transposed and flipped so that they run along
    ``target``'s axes (same directions, ascending); the affine follows, so every voxel stays
    where it is in space. None when ``source``'s axes are not ``target``'s up to order and
    sign (an oblique grid)."""
    cosines = target.direction.T @ source.direction  # [target axis, source axis]
    to_target = np.argmax(np.abs(cosines), axis=0)
    if sorted(to_target.tolist()) != [0, 1, 2]:
        return None
    signs = np.sign(cosines[to_target, [0, 1, 2]])
    expected = np.zeros((3, 3))
    expected[to_target, [0, 1, 2]] = signs
    if np.abs(cosines - expected).max() > DIRECTION_TOL:
        return None
    axes = [int(np.flatnonzero(to_target == a)[0]) for a in range(3)]  # source axis of each
    flips = [bool(signs[j] < 0) for j in axes]
    if axes == [0, 1, 2] and not any(flips):
        return source
    array = np.transpose(source.array, [0, *(j + 1 for j in axes)])
    array = np.flip(array, axis=[a + 1 for a in range(3) if flips[a]]) if any(flips) else array
    index_map = np.zeros((4, 4))  # new voxel index -> source voxel index
    index_map[3, 3] = 1.0
    for a, j in enumerate(axes):
        n = source.shape[j]
        index_map[j, a] = -1.0 if flips[a] else 1.0
        index_map[j, 3] = n - 1.0 if flips[a] else 0.0
    return Volume(np.ascontiguousarray(array), source.affine @ index_map, source=source.source,
                  meta=dict(source.meta))


def same_grid(a: Volume, b: Volume) -> bool:
    """Whether ``a`` and ``b`` have their voxels at the same points (same shape, every voxel
    within ``POSITION_TOL`` of the smallest spacing)."""
    if a.shape != b.shape:
        return False
    corners = np.array([[i, j, k, 1.0] for i in (0, a.shape[0] - 1) for j in (0, a.shape[1] - 1)
                        for k in (0, a.shape[2] - 1)]).T
    apart = np.linalg.norm((a.affine @ corners - b.affine @ corners)[:3], axis=0).max()
    return bool(apart <= POSITION_TOL * float(b.spacing.min()))


def _mm(values: np.ndarray) -> str:
    return "x".join(f"{v:g}" for v in np.round(values, 4)) + " mm"


def grid_difference(source: Volume, target: Volume) -> str:
    """How ``source``'s grid differs from ``target``'s, in words (after reordering its axes
    like ``target``'s where that is possible)."""
    aligned = reoriented_like(source, target)
    if aligned is None:
        return "its axes are not the reference's axes (an oblique or rotated grid)"
    if aligned.shape != target.shape:
        return f"shape {shape_text(aligned.shape)} against {shape_text(target.shape)}"
    if np.abs(aligned.spacing - target.spacing).max() > DIRECTION_TOL * target.spacing.min():
        return f"spacing {_mm(aligned.spacing)} against {_mm(target.spacing)}"
    shift = aligned.origin - target.origin
    return f"shifted by {float(np.linalg.norm(shift)):.3g} mm ({_mm(shift)} in x, y, z)"


def _resampled(source: Volume, target: Volume, mode: str) -> Volume:
    """``source`` resampled onto ``target``'s grid; ``InputError`` when part of the target lies
    outside ``source``."""
    reference = sitk_from_volume(target.with_array(np.zeros((1, *target.shape), np.float32)))
    interpolator = sitk.sitkLinear if mode == "linear" else sitk.sitkNearestNeighbor
    pixel = sitk.sitkVectorFloat32 if source.channels > 1 else sitk.sitkFloat32
    image = sitk.Resample(sitk_from_volume(source), reference, sitk.Transform(), interpolator,
                          0.0, pixel, True)
    ones = source.with_array(np.ones((1, *source.shape), np.float32))
    covered = sitk.Resample(sitk_from_volume(ones), reference, sitk.Transform(),
                            sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32)
    fraction = float(sitk.GetArrayViewFromImage(covered).mean())
    if fraction < 1.0:
        raise InputError(f"{source.source}: covers only {100 * fraction:.1f}% of the reference "
                         f"{target.source} in space; cannot resample it onto the whole grid")
    out = volume_from_sitk(image, source.source, meta=dict(source.meta))
    return out.with_array(out.array, target.affine.copy())


def on_grid_of(source: Volume, target: Volume, what: str,
               resample: str | None = None) -> Volume:
    """``source`` (a ``what``, for messages) on ``target``'s grid: as it is, reordered exactly,
    or resampled with ``resample`` (``"linear"`` or ``"nearest"``) when the grids differ; with
    ``resample=None`` a difference is an ``InputError`` that says what differs."""
    aligned = reoriented_like(source, target)
    if aligned is not None and same_grid(aligned, target):
        return aligned
    if resample is None:
        raise InputError(f"{source.source}: the {what} is not on the grid of the reference "
                         f"{target.source}: {grid_difference(source, target)}", fix="resample")
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
    return _resampled(source, target, resample)
