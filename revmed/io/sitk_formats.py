"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) files through SimpleITK.

Which suffix is which format, and which are written, is in ``revmed.io.formats``.

ITK does not check the integrity of compressed voxel data: NRRD's gzip reader ignores the
stream's CRC-32 and MetaIO prints "Uncompress failed" and goes on, so a damaged file reads as
garbage voxels. revmed (which writes these files compressed itself) first decompresses the
voxel data of a compressed file once with Python's ``zlib``/``bz2`` (``revmed.io.payload``),
which verify the stream's checksum and length, and refuses a file whose data is damaged or
cut short.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from revmed.io.atomic import atomic_path
from revmed.errors import InputError, OutputError
from revmed.io.formats import ITK_FORMATS, ITK_WRITE_SUFFIXES, full_suffix
from revmed.io.messages import check_regular_file, itk_reason, quiet_libraries
from revmed.io.payload import header_problem, header_spacing, payload_problem
from revmed.io.sitk_convert import sitk_from_volume, volume_from_sitk
from revmed.io.volume import Volume
from revmed.sizes import require_memory, shape_text, voxel_bytes



def read_sitk_file(path: Path) -> Volume:
    """Read a NRRD or MetaImage file as a ``Volume`` (``(C, I, J, K)`` float32, RAS+ affine).

    The ImageIO is fixed by the suffix, so a file that is not of that format fails with an
    ``InputError`` instead of being guessed at by another reader.
    """
    io_name, fmt = ITK_FORMATS[full_suffix(path).lower()]
    check_regular_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(io_name)
    try:
        with quiet_libraries():
            reader.ReadImageInformation()  # the header: refuse what cannot fit before the voxels
        size, channels = reader.GetSize(), reader.GetNumberOfComponents()
        stored = _stored_dtype(reader.GetPixelID(), channels)
        stored_bytes = voxel_bytes(size, channels, stored.itemsize)
        require_memory(str(path), stored_bytes + voxel_bytes(size, channels)
                       + Path(path).stat().st_size,
                       f"its voxels ({shape_text(size)}, {channels} channel(s))")
        problem = header_problem(Path(path), fmt) or payload_problem(Path(path), fmt,
                                                                      stored_bytes)
        if problem is not None:
            raise InputError(f"{path}: cannot read {fmt} file; {problem}")
        with quiet_libraries():
            image = reader.Execute()
        _check_stated_spacing(Path(path), fmt, image.GetSpacing())
    except RuntimeError as exc:
        raise InputError(
            f"{path}: cannot read {fmt} file; it may be truncated or corrupt ({itk_reason(exc)})"
        ) from exc
    return volume_from_sitk(image, str(path), meta={"format": fmt.lower(),
                                                    "stored_dtype": stored.name})


def _check_stated_spacing(path: Path, fmt: str, itk_spacing) -> None:
    """``InputError`` when ITK's voxel size is not the one the header states (ITK reads values
    it cannot use as 1 mm, silently)."""
    stated = header_spacing(path, fmt)
    if stated is None or len(stated) < 3:
        return
    stated, read = np.asarray(stated[:3]), np.asarray(itk_spacing[:3], dtype=np.float64)
    with np.errstate(all="ignore"):
        same = np.isclose(stated, read, rtol=1e-6, atol=0)
    if not same.all():
        raise InputError(f"{path}: its header states a voxel size of "
                         f"{'x'.join(f'{v:.4g}' for v in stated)} mm, which ITK reads as "
                         f"{'x'.join(f'{v:.4g}' for v in read)}; the file's geometry is damaged")


def _stored_dtype(pixel_id: int, channels: int) -> np.dtype:
    """The NumPy type of one component of SimpleITK pixel type ``pixel_id``."""
    probe = sitk.Image([1, 1, 1], pixel_id, channels) if channels > 1 else \
        sitk.Image([1, 1, 1], pixel_id)
    return sitk.GetArrayViewFromImage(probe).dtype


def write_sitk_file(volume: Volume, path: Path, dtype=np.float32) -> None:
    """Write ``volume`` atomically as .nrrd or .mha (gzip-compressed); channels -> vector voxels.

    A volume read from DICOM slices resampled onto a regular grid keeps what was done in the
    header field ``revmed_dicom_geometry``."""
    suffix = full_suffix(path).lower()
    if suffix not in ITK_WRITE_SUFFIXES:
        raise OutputError(f"{path}: cannot write {suffix!r} files")
    io_name, fmt = ITK_FORMATS[suffix]
    image = sitk_from_volume(volume, dtype=dtype, path=path)
    if volume.meta.get("dicom_geometry"):  # DICOM slices resampled onto a regular grid
        image.SetMetaData("revmed_dicom_geometry", str(volume.meta["dicom_geometry"]))
    try:
        with atomic_path(path) as tmp:
            writer = sitk.ImageFileWriter()
            writer.SetFileName(str(tmp))
            writer.SetImageIO(io_name)
            writer.SetUseCompression(True)
            writer.Execute(image)
    except (RuntimeError, OSError) as exc:
        reason = itk_reason(exc) if isinstance(exc, RuntimeError) else str(exc)
        raise OutputError(f"{path}: cannot write {fmt} file ({reason})") from exc
