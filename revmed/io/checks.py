"""Checks on voxel arrays at the I/O boundary: what revmed accepts on read and can write.

* ``check_spatial_shape``: a readable image must be a real 3D grid (no 2D images, no single
  slice, no empty axis).
* ``check_affine``: a readable image must have a usable place in the world (see its doc for
  what is refused and what is only warned about).
* ``check_finite``: NaN / Inf voxels, reported by count and channel.
* ``cast_for_writing``: the float -> file dtype conversion, refusing values that do not fit.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from revmed.errors import InputError, OutputError, RevmedWarning
from revmed.io.volume import Volume

#: Voxel types a volume can be written with (``float32`` is the default; integer types are
#: for label maps).
WRITABLE_DTYPES = tuple(
    np.dtype(name)
    for name in ("float32", "float64", "uint8", "int8", "uint16", "int16", "uint32", "int32")
)


def check_spatial_shape(source: str, shape: Sequence[int]) -> None:
    """Raise ``InputError`` unless ``shape`` (the spatial ``(I, J, K)``) is a 3D grid.

    Two-axis images and single-slice grids (an axis of length 1, e.g. one DICOM slice) are
    2D images to revmed's 3D networks, so both are refused, as is an axis of length 0.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3:
        raise InputError(
            f"{source}: expected a 3D volume, got a {len(shape)}D image of shape {shape}"
        )
    if any(s == 0 for s in shape):
        raise InputError(f"{source}: the image has a zero-size dimension: shape {shape}")
    if any(s == 1 for s in shape):
        raise InputError(
            f"{source}: expected a 3D volume, got a single slice (2D image) of shape {shape}"
        )


#: Voxel sizes (mm) revmed reads: 0.1 micron to 10 m; anything else is a damaged header.
SPACING_RANGE = (1e-4, 1e4)
#: Largest distance (mm) of the first voxel from the world origin: 10 km.
MAX_ORIGIN_MM = 1e7
#: Below this |det| of the unit axis directions, the axes are taken as (nearly) parallel.
MIN_AXIS_VOLUME = 1e-3
#: Axes further than this from perpendicular (cosine of their angle) are sheared.
SHEAR_COSINE = 1e-3


def axis_shear_degrees(affine: np.ndarray) -> float:
    """How far (degrees) the most sheared pair of voxel axes of ``affine`` is from
    perpendicular (0 for an orthogonal grid)."""
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    with np.errstate(all="ignore"):
        unit = columns / np.linalg.norm(columns, axis=0)
        cosines = np.abs(unit.T @ unit - np.eye(3)).max()
    return float(np.degrees(np.arcsin(min(float(cosines), 1.0))))


def is_sheared(affine: np.ndarray) -> bool:
    """Whether the voxel axes of ``affine`` are further from perpendicular than
    ``SHEAR_COSINE``."""
    return bool(np.sin(np.radians(axis_shear_degrees(affine))) > SHEAR_COSINE)


def check_affine(source: str, affine: np.ndarray) -> None:
    """Refuse a voxel-to-world ``affine`` no geometry can be built on, warn about one that is
    unusual; the rules (docs/reliability.md):

    * non-finite values, a voxel size of 0 or outside ``SPACING_RANGE``, an origin further
      than ``MAX_ORIGIN_MM``, or (nearly) parallel axes (a rank-deficient matrix):
      ``InputError`` naming ``source``; writing such a grid fails, and anything computed on it
      is meaningless;
    * sheared axes (not perpendicular): a ``RevmedWarning``; the affine is kept exactly as it
      is, so outputs are on the same sheared grid.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        kinds = " and ".join(k for k, bad in (("NaN", np.isnan(affine).any()),
                                              ("infinite", np.isinf(affine).any())) if bad)
        raise InputError(f"{source}: the voxel-to-world transform holds {kinds} values; the "
                         "file's geometry is damaged")
    with np.errstate(all="ignore"):  # a norm may overflow: that is what is refused here
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
    low, high = SPACING_RANGE
    if np.any(spacing < low) or np.any(spacing > high):
        shown = "x".join(f"{s:.4g}" for s in spacing)
        raise InputError(f"{source}: voxel size {shown} mm is not usable (it must be between "
                         f"{low:g} and {high:g} mm along every axis); the file's geometry is "
                         "damaged")
    if np.abs(affine[:3, 3]).max() > MAX_ORIGIN_MM:
        raise InputError(f"{source}: the first voxel lies "
                         f"{np.abs(affine[:3, 3]).max():.3g} mm from the origin; the file's "
                         "geometry is damaged")
    if abs(np.linalg.det(affine[:3, :3] / spacing)) < MIN_AXIS_VOLUME:
        raise InputError(f"{source}: two voxel axes point the same way (the voxel-to-world "
                         "matrix is singular); the file's geometry is damaged")
    if is_sheared(affine):
        warnings.warn(f"{source}: the voxel axes are sheared ({axis_shear_degrees(affine):.3g} "
                      "degrees from "
                      "perpendicular); revmed keeps the grid as it is, so outputs are on the "
                      "same sheared grid", RevmedWarning, stacklevel=3)


def check_finite(volume: Volume) -> Volume:
    """Raise ``InputError`` naming the source when ``volume`` has NaN or infinite voxels.

    The message gives the number of such voxels (and, for several channels, which channels
    hold them, by file when the volume came from ``read_channels``). Returns ``volume``
    unchanged so the call can be chained.
    """
    array = volume.array  # (C, I, J, K)
    finite = np.isfinite(array)
    if finite.all():
        return volume
    bad_per_channel = (~finite).reshape(array.shape[0], -1).sum(axis=1)
    nan = int(np.isnan(array).sum())
    inf = int(bad_per_channel.sum()) - nan
    bad_channels = [int(c) for c in np.flatnonzero(bad_per_channel)]
    source, total, where = volume.source or "volume", array.size, ""
    channel_sources = volume.meta.get("channel_sources")
    if channel_sources and len(bad_channels) == 1:  # one file of read_channels: name it
        source, total = channel_sources[bad_channels[0]], array[0].size
    elif array.shape[0] > 1:
        where = f" in channel(s) {bad_channels}"
    raise InputError(
        f"{source}: {int(bad_per_channel.sum())} of {total} voxels are not finite "
        f"({nan} NaN, {inf} infinite){where}"
    )


def cast_for_writing(array: np.ndarray, dtype, path) -> np.ndarray:
    """``array`` converted to ``dtype`` for writing to ``path``.

    Floats pass through ``astype``. For an integer ``dtype`` (label maps) the values are
    rounded to the nearest integer; NaN/Inf or values outside the type's range raise
    ``OutputError`` instead of wrapping around silently.
    """
    try:
        target = np.dtype(dtype)
    except TypeError as exc:
        raise OutputError(f"{path}: unknown voxel type {dtype!r}") from exc
    if target not in WRITABLE_DTYPES:
        names = ", ".join(d.name for d in WRITABLE_DTYPES)
        raise OutputError(f"{path}: cannot write voxel type {target.name}; use one of {names}")
    array = np.asarray(array)
    if target.kind == "f":
        return array.astype(target, copy=False)
    if array.size and not np.isfinite(array).all():
        raise OutputError(f"{path}: cannot write NaN or infinite voxels as {target.name}")
    rounded = array if array.dtype.kind in "biu" else np.rint(array)
    info = np.iinfo(target)
    if rounded.size and (rounded.min() < info.min or rounded.max() > info.max):
        raise OutputError(
            f"{path}: values from {rounded.min():g} to {rounded.max():g} do not fit in "
            f"{target.name} ({info.min} to {info.max})"
        )
    return rounded.astype(target)
