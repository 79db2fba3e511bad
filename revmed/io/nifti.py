"""NIfTI (.nii, .nii.gz) through nibabel, keeping the file's affine exactly.

nibabel already works in RAS+ and in voxel order ``(I, J, K)``, so no axis is moved except the
channel axis, which NIfTI keeps last and revmed keeps first.

Geometry: the affine is nibabel's best one (the sform when its code is set, else the qform),
checked by ``check_affine``. A header whose pixdim gives a voxel size of 0 is refused (nibabel
would silently read it as 1 mm), and so is a negative one: nibabel reads its absolute value
while ITK flips the axis, with or without an sform, so the two place the voxels differently. When the file sets both a qform and an unsheared sform and
they place the grid differently, revmed warns and uses the sform, as nibabel does (ITK-based
tools read the qform in some cases, so the same file can land elsewhere there).
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from revmed.errors import InputError, OutputError, RevmedWarning
from revmed.io.atomic import atomic_path
from revmed.io.checks import cast_for_writing, check_affine, check_spatial_shape, is_sheared
from revmed.io.messages import check_regular_file, exception_reason, quiet_libraries
from revmed.io.volume import Volume
from revmed.sizes import require_memory, shape_text, voxel_bytes

#: Where qform and sform may place a grid corner apart (mm) before they are said to disagree.
QFORM_SFORM_MM = 0.01
#: Bytes of float64 scratch that scaling the voxels uses (one buffer, reused).
SCALING_CHUNK = 32 << 20


def read_nifti_header(path: Path) -> tuple[nib.Nifti1Image, tuple[int, int, int], int]:
    """Open a NIfTI file without reading its voxels: ``(image, (I, J, K), channels)``.

    A 4D file's last axis is the channel axis; a 5D file of shape ``(I, J, K, 1, C)`` (NIfTI
    vector intent) has ``C`` channels. Raises ``InputError`` for a file that is not NIfTI or
    not a 3D grid.
    """
    check_regular_file(path)
    try:
        with quiet_libraries():
            image = nib.load(str(path))
            affine = image.affine
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
    _check_header_geometry(path, image.header, affine, spatial)
    return image, spatial, channels  # type: ignore[return-value]


def _check_header_geometry(path: Path, header, affine: np.ndarray, spatial) -> None:
    """Refuse a zero voxel size in pixdim where the affine comes from it, check the affine
    (``check_affine``), and warn when qform and sform place the grid differently."""
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    pixdim = _raw_pixdim(path, header)
    if sform_code == 0 and not np.all(pixdim != 0):
        raise InputError(f"{path}: pixdim gives a voxel size of "
                         f"{'x'.join(f'{v:g}' for v in pixdim)} mm; the file's geometry is "
                         "damaged")
    spatial_unit = int(header["xyzt_units"]) & 0x07
    if spatial_unit in (1, 3):  # NIFTI_UNITS_METER, NIFTI_UNITS_MICRON
        unit = "metres" if spatial_unit == 1 else "micrometres"
        raise InputError(f"{path}: its spatial unit (xyzt_units) is {unit}; readers disagree "
                         "on such a file (nibabel takes its values as millimetres, ITK "
                         "converts them), so revmed reads millimetre (or unit-less) files "
                         "only")
    if np.any(pixdim < 0):
        raise InputError(f"{path}: pixdim gives a negative voxel size "
                         f"({'x'.join(f'{v:g}' for v in pixdim)} mm); NIfTI readers disagree on "
                         "what that means (nibabel takes its absolute value, ITK flips the "
                         "axis), so where the voxels lie is ambiguous")
    check_affine(str(path), affine)
    if sform_code == 0 or qform_code == 0:
        return
    sform = np.asarray(header.get_sform(), dtype=np.float64)
    if is_sheared(sform):  # a qform cannot hold shear: check_affine warned about it
        return
    try:
        with quiet_libraries():
            qform = np.asarray(header.get_qform(), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001  nibabel refuses a damaged quaternion
        warnings.warn(f"{path}: its qform is damaged ({exception_reason(exc)}); revmed uses "
                      "the sform, as nibabel does (some ITK-based tools use the qform)",
                      RevmedWarning, stacklevel=3)
        return
    corners = np.array([[i, j, k, 1.0] for i in (0, spatial[0] - 1) for j in (0, spatial[1] - 1)
                        for k in (0, spatial[2] - 1)]).T
    apart = float(np.nan_to_num(np.abs((sform - qform) @ corners), nan=np.inf).max())
    if apart > QFORM_SFORM_MM:
        warnings.warn(f"{path}: its qform and sform place the grid up to {apart:.3g} mm apart; "
                      "revmed uses the sform, as nibabel does (some ITK-based tools use the "
                      "qform)", RevmedWarning, stacklevel=3)


def _raw_pixdim(path: Path, header) -> np.ndarray:
    """pixdim[1:4] as the file holds them (nibabel replaces a 0 by 1 when it loads a header)."""
    try:
        with quiet_libraries(), nib.openers.ImageOpener(str(path)) as handle:
            raw = type(header).from_fileobj(handle, check=False)
        return np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    except Exception:  # noqa: BLE001 - then nibabel's reading of them is all there is
        return np.asarray(header["pixdim"][1:4], dtype=np.float64)


def read_nifti(path: Path) -> Volume:
    """Read a 3D or 4D NIfTI file; a 4D file's last axis becomes the channel axis.

    Returns a ``Volume`` with ``array`` of shape ``(C, I, J, K)`` float32, scaled by the
    header's slope/intercept, and the header's best affine (sform, else qform).
    A 5D file of shape ``(I, J, K, 1, C)`` (NIfTI vector intent) is read as ``C`` channels.
    """
    image, spatial, channels = read_nifti_header(path)
    stored = np.dtype(image.get_data_dtype())
    if stored.kind not in "biuf":
        raise InputError(f"{path}: unsupported NIfTI voxel type {image.get_data_dtype()}")
    require_memory(str(path), reading_bytes(spatial, channels, stored.itemsize,
                                            _scaled(image.dataobj),
                                            str(path).lower().endswith(".gz")),
                   f"its voxels ({shape_text(spatial)}, {channels} channel(s))")
    stored_voxels = (_verified_gzip_voxels(path, image) if str(path).lower().endswith(".gz")
                     else None)
    try:
        # nibabel loads lazily: reading the voxels here makes a truncated or corrupt file fail
        # now, with its name, rather than somewhere inside training.
        with quiet_libraries():
            array = _voxels(image, spatial, channels, stored_voxels)
    except Exception as exc:
        raise InputError(
            f"{path}: cannot read the voxels; the file may be truncated or corrupt "
            f"({exception_reason(exc)})"
        ) from exc
    return Volume(array, image.affine, source=str(path),
                  meta={"format": "nifti", "stored_dtype": stored.name})


def _verified_gzip_voxels(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    """The stored voxels of a ``.nii.gz`` (unscaled, the file's shape, a view of one buffer),
    read with the gzip stream to its end: that checks its CRC-32 and length, which a read of
    the voxels alone never reaches (a flipped bit would change voxels silently)."""
    dtype, shape = np.dtype(image.get_data_dtype()), tuple(int(v) for v in image.shape)
    offset = int(image.dataobj.offset)  # where nibabel reads the voxels from
    buffer = bytearray(offset + int(np.prod(shape)) * dtype.itemsize)
    try:
        with gzip.open(path, "rb") as handle:
            view, got = memoryview(buffer), 0
            while got < len(buffer):
                count = handle.readinto(view[got:])
                if not count:
                    raise EOFError("it ends before the voxels its header declares")
                got += count
            while handle.read(1 << 20):  # to the end, where the checksum is compared
                pass
    except EOFError as exc:
        raise InputError(f"{path}: the file is truncated or corrupt: its compressed data "
                         f"ends early ({exc})") from None
    except (OSError, zlib.error) as exc:
        raise InputError(f"{path}: the file is corrupt: its compressed data fails the gzip "
                         f"checksum ({exception_reason(exc)}); its voxels cannot be "
                         "trusted") from None
    return np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape)),
                         offset=offset).reshape(shape, order="F")


def reading_bytes(spatial, channels: int, itemsize: int, scaled: bool = True,
                  compressed: bool = True) -> int:
    """Peak bytes ``read_nifti`` holds for a grid: the stored voxels, the float32 result, the
    scaling scratch (for a file with a scale factor) and a margin for the libraries' buffers;
    or, for a ``.nii.gz``, twice the stored voxels if more (nibabel's gzip read holds two
    copies for a moment). The measured peaks are in docs/reliability.md."""
    stored, result = voxel_bytes(spatial, channels, itemsize), voxel_bytes(spatial, channels)
    scratch = min(SCALING_CHUNK, 2 * result) if scaled else 0
    margin = min(4 << 20, result // 4) + result // 32
    return max(stored + result + scratch, 2 * stored if compressed else 0) + margin


def _scaled(proxy) -> bool:
    """Whether voxels read through ``proxy`` are scaled (a slope other than 1 or an offset)."""
    return (float(getattr(proxy, "slope", 1.0)) != 1.0
            or float(getattr(proxy, "inter", 0.0)) != 0.0)


def _voxels(image: nib.Nifti1Image, spatial, channels: int,
            stored: np.ndarray | None = None) -> np.ndarray:
    """The voxels as float32 ``(C, I, J, K)``, scaled exactly as nibabel scales them (in
    float64, then rounded), but holding only the stored voxels (``stored`` when they were
    read already) and the result at once, plus ``SCALING_CHUNK`` of scratch (nibabel's own
    path holds float64 copies of the whole)."""
    proxy = image.dataobj
    raw = stored if stored is not None else np.asanyarray(
        proxy.get_unscaled() if nib.is_proxy(proxy) else proxy)
    raw = raw.reshape(tuple(spatial) + (channels,), order="F")  # (I, J, K, C), no copy
    view = np.moveaxis(raw, -1, 0)  # (C, I, J, K)
    out = np.empty(view.shape, dtype=np.float32)
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    if slope == 1.0 and inter == 0.0:
        np.copyto(out, view, casting="unsafe")
        return out
    step = max(1, SCALING_CHUNK // max(1, 8 * view[:, :1].size))
    scratch = np.empty((view.shape[0], min(step, view.shape[1]), *view.shape[2:]), np.float64)
    for start in range(0, view.shape[1], step):
        part = view[:, start:start + step]
        buffer = scratch[:, :part.shape[1]]
        np.copyto(buffer, part, casting="unsafe")
        buffer *= slope  # in float64, as nibabel scales, then rounded once to float32
        buffer += inter
        out[:, start:start + step] = buffer
    return out


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
    without scaling (integers are rounded, see ``cast_for_writing``). A volume read from DICOM
    slices that had to be resampled onto a regular grid (``meta["dicom_geometry"]``) says so
    in the header's description, and in full in a comment extension.
    """
    array = cast_for_writing(volume.array, dtype, path)  # (C, I, J, K)
    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    image = nib.Nifti1Image(data, volume.affine)
    correction = volume.meta.get("dicom_geometry")
    if correction:
        moved = volume.meta.get("dicom_correction_mm", float("nan"))
        image.header["descrip"] = (f"revmed: DICOM slices resampled, largest correction "
                                   f"{moved:.3g} mm").encode()[:80]
        image.header.extensions.append(
            nib.nifti1.Nifti1Extension("comment", f"revmed: {correction}".encode()))
    image.header.set_data_dtype(data.dtype)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    try:
        with atomic_path(path) as tmp:
            nib.save(image, str(tmp))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write NIfTI file ({exception_reason(exc)})") from exc
