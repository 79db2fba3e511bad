"""The integer voxel type a volume's values came in, so a result can be written back in it.

Volumes are float32 in memory whatever the file stores. A result computed from an integer
volume (a CT in int16, say) can be written in that type again when its values, rounded, fit
(``revmed infer --dtype input``). ``stored_dtype`` tells the type when the values read are
exactly the stored integers: unscaled NIfTI, NRRD and MetaImage integer files, and DICOM
series whose RescaleSlope is 1 with a whole intercept (CT in HU), read as int16.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from revmed.io.checks import WRITABLE_DTYPES
from revmed.io.dicom.write import source_header
from revmed.io.formats import ITK_FORMATS, NIFTI_SUFFIXES, full_suffix
from revmed.io.volume import Volume

#: SimpleITK pixel types (scalar and vector) -> numpy integer types.
_ITK_INTEGERS = {
    pixel: np.dtype(name)
    for name, pixels in {
        "uint8": (sitk.sitkUInt8, sitk.sitkVectorUInt8),
        "int8": (sitk.sitkInt8, sitk.sitkVectorInt8),
        "uint16": (sitk.sitkUInt16, sitk.sitkVectorUInt16),
        "int16": (sitk.sitkInt16, sitk.sitkVectorInt16),
        "uint32": (sitk.sitkUInt32, sitk.sitkVectorUInt32),
        "int32": (sitk.sitkInt32, sitk.sitkVectorInt32),
    }.items()
    for pixel in pixels
}


def stored_dtype(volume: Volume) -> np.dtype | None:
    """The integer type ``volume``'s values were stored in (its first channel's file for
    ``read_channels``), or None: float files, scaled values, unknown sources, and types
    revmed does not write (64-bit)."""
    dtype = _stored(volume)
    return dtype if dtype in WRITABLE_DTYPES else None


def _stored(volume: Volume) -> np.dtype | None:
    source = volume.meta.get("channel_sources", [volume.source])[0]
    meta = (volume.meta.get("channel_meta") or [volume.meta])[0]
    if meta.get("format") == "dicom":
        header = source_header(Volume(volume.array[:1], volume.affine, source, meta))
        slope = float(header.get("RescaleSlope", 1) or 1) if header is not None else 0.0
        intercept = float(header.get("RescaleIntercept", 0) or 0) if header is not None else 0.5
        return np.dtype(np.int16) if slope == 1 and intercept == round(intercept) else None
    suffix = full_suffix(source).lower()
    try:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            header = nib.load(source).header
            slope, intercept = header.get_slope_inter()
            dtype = np.dtype(header.get_data_dtype())
            scaled = slope not in (None, 1.0) or intercept not in (None, 0.0)
            return dtype if dtype.kind in "iu" and not scaled else None
        if suffix in ITK_FORMATS:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(source))
            reader.ReadImageInformation()
            return _ITK_INTEGERS.get(reader.GetPixelID())
    except Exception:  # the file was read before; a type that cannot be told is no type
        return None
    return None
