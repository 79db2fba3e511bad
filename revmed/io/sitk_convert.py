"""Exact conversion between SimpleITK images and ``Volume``.

SimpleITK describes a grid by ``size`` ``(nx, ny, nz)``, ``spacing`` ``(sx, sy, sz)``,
``direction`` (3x3, row-major, columns = unit axis directions) and ``origin``, all in the LPS+
world frame; ``GetArrayFromImage`` returns voxels as ``(z, y, x)`` (``(z, y, x, c)`` for vector
images). ITK index ``(x, y, z)`` is revmed's ``(i, j, k)``, so

* ``array[c, i, j, k] = numpy_view[k, j, i, c]`` (a transpose, no flip), and
* ``affine[:3, :3] = F @ direction @ diag(spacing)``, ``affine[:3, 3] = F @ origin`` with
  ``F = diag(-1, -1, 1)`` the LPS <-> RAS flip.

Both directions use only sign flips, products and column norms, so a round trip is exact to
float64 rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from revmed.errors import InputError, OutputError
from revmed.io.checks import cast_for_writing, check_affine, check_spatial_shape
from revmed.io.volume import LPS_TO_RAS, Volume, spacing_of


def volume_from_sitk(image: sitk.Image, source: str, meta: dict[str, Any] | None = None) -> Volume:
    """Convert a 3D SimpleITK image (scalar or vector) to a ``Volume``.

    A 4D scalar image is read as channels along its 4th axis when that axis is not tilted into
    space. Voxels become float32 ``(C, I, J, K)``; raises ``InputError`` naming ``source`` for
    2D images, complex voxels, 5D+ images or a geometry ``check_affine`` refuses. ``meta``
    gets ``stored_dtype`` (the image's voxel type) unless it holds one.
    """
    dim = image.GetDimension()
    size = tuple(int(s) for s in image.GetSize())  # (nx, ny, nz[, nt])
    components = image.GetNumberOfComponentsPerPixel()
    if "complex" in image.GetPixelIDTypeAsString():
        raise InputError(f"{source}: complex-valued voxels are not supported")
    if dim < 3:
        check_spatial_shape(source, size)  # raises: "expected a 3D volume"
    if dim > 4 or (dim == 4 and components > 1):
        raise InputError(
            f"{source}: expected a 3D volume or a 4D stack of channels, "
            f"got a {dim}D image of size {size}"
        )
    check_spatial_shape(source, size[:3])
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    if dim == 4:
        if size[3] == 0:
            raise InputError(f"{source}: the image has a zero-size dimension: size {size}")
        if np.any(direction[3, :3] != 0) or np.any(direction[:3, 3] != 0):
            raise InputError(
                f"{source}: the 4th image axis is tilted into space; cannot read it as channels"
            )
    view = sitk.GetArrayViewFromImage(image)  # (z, y, x), (z, y, x, c) or (t, z, y, x)
    if dim == 4:
        order = (0, 3, 2, 1)
    elif components > 1:
        order = (3, 2, 1, 0)
    else:
        view, order = view[None], (0, 3, 2, 1)
    # Copy: the view shares the image's memory, which goes away with the image.
    array = np.array(np.transpose(view, order), dtype=np.float32, order="C", copy=True)  # (C, I, J, K)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction[:3, :3] * spacing[None, :]
    affine[:3, 3] = LPS_TO_RAS @ origin
    check_affine(source, affine)
    meta = {"stored_dtype": view.dtype.name, **(meta or {})}
    return Volume(array, affine, source=source, meta=meta)


def sitk_from_volume(volume: Volume, dtype=np.float32, path="") -> sitk.Image:
    """Convert ``volume`` to a 3D SimpleITK image; several channels give a vector image.

    Voxels are cast with ``cast_for_writing`` (``path`` is only used in its messages).
    Direction is the affine's columns divided by their norms (the spacing), so a sheared
    affine is kept as a non-orthogonal direction rather than silently squared up.
    """
    array = cast_for_writing(volume.array, dtype, path)  # (C, I, J, K)
    if array.shape[0] == 1:
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array[0], (2, 1, 0))))
    else:
        image = sitk.GetImageFromArray(
            np.ascontiguousarray(np.transpose(array, (3, 2, 1, 0))), isVector=True
        )
    spacing = spacing_of(volume.affine)
    if np.any(spacing == 0) or not np.all(np.isfinite(volume.affine)):
        raise OutputError(f"{path}: the volume's affine is degenerate (spacing {spacing.tolist()})")
    direction = LPS_TO_RAS @ volume.affine[:3, :3] / spacing[None, :]
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin((LPS_TO_RAS @ volume.affine[:3, 3]).tolist())
    return image
