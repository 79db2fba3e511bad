"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) files through SimpleITK.

Which suffix is which format, and which are written, is in ``revmed.io.formats``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from revmed.atomic import atomic_path
from revmed.errors import InputError, OutputError
from revmed.io.formats import ITK_FORMATS, ITK_WRITE_SUFFIXES, full_suffix
from revmed.io.messages import itk_reason
from revmed.io.sitk_convert import sitk_from_volume, volume_from_sitk
from revmed.io.volume import Volume
from revmed.sizes import require_memory, voxel_bytes
from revmed.sizes import shape_text



def read_sitk_file(path: Path) -> Volume:
    """Read a NRRD or MetaImage file as a ``Volume`` (``(C, I, J, K)`` float32, RAS+ affine).

    The ImageIO is fixed by the suffix, so a file that is not of that format fails with an
    ``InputError`` instead of being guessed at by another reader.
    """
    io_name, fmt = ITK_FORMATS[full_suffix(path).lower()]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(io_name)
    try:
        reader.ReadImageInformation()  # the header: refuse what cannot fit before reading voxels
        size, channels = reader.GetSize(), reader.GetNumberOfComponents()
        require_memory(str(path), voxel_bytes(size, channels),
                       f"its voxels ({shape_text(size)}, {channels} channel(s))")
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"{path}: cannot read {fmt} file; it may be truncated or corrupt ({itk_reason(exc)})"
        ) from exc
    return volume_from_sitk(image, str(path), meta={"format": fmt.lower()})


def write_sitk_file(volume: Volume, path: Path, dtype=np.float32) -> None:
    """Write ``volume`` atomically as .nrrd or .mha (gzip-compressed); channels -> vector voxels."""
    suffix = full_suffix(path).lower()
    if suffix not in ITK_WRITE_SUFFIXES:
        raise OutputError(f"{path}: cannot write {suffix!r} files")
    io_name, fmt = ITK_FORMATS[suffix]
    image = sitk_from_volume(volume, dtype=dtype, path=path)
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
