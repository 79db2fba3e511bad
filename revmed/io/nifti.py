"""NIfTI (.nii, .nii.gz) through nibabel, keeping the file's affine exactly.

nibabel already works in RAS+ and in voxel order ``(I, J, K)``, so no axis is moved except the
channel axis, which NIfTI keeps last and revmed keeps first.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from revmed.atomic import atomic_path
from revmed.errors import InputError, OutputError
from revmed.io.checks import cast_for_writing, check_spatial_shape
from revmed.io.messages import exception_reason
from revmed.io.volume import Volume
from revmed.sizes import require_memory, voxel_bytes
from revmed.sizes import shape_text


def read_nifti_header(path: Path) -> tuple[nib.Nifti1Image, tuple[int, int, int], int]:
    """Open a NIfTI file without reading its voxels: ``(image, (I, J, K), channels)``.

    A 4D file's last axis is the channel axis; a 5D file of shape ``(I, J, K, 1, C)`` (NIfTI
    vector intent) has ``C`` channels. Raises ``InputError`` for a file that is not NIfTI or
    not a 3D grid.
    """
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for files that are not NIfTI
        problem = _gzip_problem(path)  # more precise than nibabel's "cannot work out file type"
        if problem is None:
            problem = f"not a readable NIfTI file ({exception_reason(exc)})"
        raise InputError(f"{path}: {problem}") from exc
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 5 and shape[3] == 1:
        spatial, channels = shape[:3], shape[4]
    elif len(shape) in (2, 3):
        spatial, channels = shape, 1
    elif len(shape) == 4:
        spatial, channels = shape[:3], shape[3]
    else:
        raise InputError(f"{path}: expected a 3D volume or a 4D stack of channels, got shape {shape}")
    check_spatial_shape(str(path), spatial)
    if channels == 0:
        raise InputError(f"{path}: the image has a zero-size dimension: shape {shape}")
    return image, spatial, channels  # type: ignore[return-value]


def read_nifti(path: Path) -> Volume:
    """Read a 3D or 4D NIfTI file; a 4D file's last axis becomes the channel axis.

    Returns a ``Volume`` with ``array`` of shape ``(C, I, J, K)`` float32, scaled by the
    header's slope/intercept, and the header's best affine (sform, else qform).
    A 5D file of shape ``(I, J, K, 1, C)`` (NIfTI vector intent) is read as ``C`` channels.
    """
    image, spatial, channels = read_nifti_header(path)
    if np.dtype(image.get_data_dtype()).kind not in "biuf":
        raise InputError(f"{path}: unsupported NIfTI voxel type {image.get_data_dtype()}")
    require_memory(str(path), voxel_bytes(spatial, channels),
                   f"its voxels ({shape_text(spatial)}, {channels} channel(s))")
    try:
        # nibabel loads lazily: reading the voxels here makes a truncated or corrupt file fail
        # now, with its name, rather than somewhere inside training.
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:
        raise InputError(
            f"{path}: cannot read the voxels; the file may be truncated or corrupt "
            f"({exception_reason(exc)})"
        ) from exc
    data = data.reshape(tuple(spatial) + (channels,))  # (I, J, K, C)
    array = np.ascontiguousarray(np.moveaxis(data, -1, 0))  # (C, I, J, K)
    return Volume(array, image.affine, source=str(path), meta={"format": "nifti"})


def _gzip_problem(path: Path) -> str | None:
    """Why a .gz file cannot be decompressed, or None if it can (or is not gzip-named).

    nibabel reports a gzip file cut short inside its first few hundred bytes only as
    "cannot work out file type"; this names the actual problem.
    """
    if not str(path).lower().endswith(".gz"):
        return None
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass
    except EOFError:
        return "the file is truncated (gzip data ends early)"
    except (gzip.BadGzipFile, zlib.error) as exc:
        return f"not a valid gzip file, so not a NIfTI .nii.gz ({exc})"
    except OSError:
        return None
    return None


def write_nifti(volume: Volume, path: Path, dtype=np.float32) -> None:
    """Write ``volume`` as NIfTI atomically; several channels become a 4D file (I, J, K, C).

    The affine goes into both sform and qform (code 1, scanner); voxels are stored as ``dtype``
    without scaling (integers are rounded, see ``cast_for_writing``).
    """
    array = cast_for_writing(volume.array, dtype, path)  # (C, I, J, K)
    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    image = nib.Nifti1Image(data, volume.affine)
    image.header.set_data_dtype(data.dtype)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    try:
        with atomic_path(path) as tmp:
            nib.save(image, str(tmp))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write NIfTI file ({exception_reason(exc)})") from exc
