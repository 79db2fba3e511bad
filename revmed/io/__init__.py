"""Reading and writing medical volumes with their geometry.

``read_volume``, ``read_channels`` and ``write_volume`` are the entry points; the rest of
revmed never calls nibabel, SimpleITK or pydicom directly. Every volume is a ``Volume`` with a
``(C, I, J, K)`` float32 array and a RAS+ voxel-to-millimetre affine, whatever the file format
(NIfTI, NRRD, MetaImage, DICOM series).
"""

from __future__ import annotations

from revmed.io.channels import read_channels
from revmed.io.checks import check_finite
from revmed.io.dicom import SeriesInfo, list_dicom_series
from revmed.io.dispatch import read_volume, write_volume
from revmed.io.volume import Volume, make_affine, spacing_of, zoom_affine

__all__ = [
    "SeriesInfo",
    "Volume",
    "check_finite",
    "list_dicom_series",
    "make_affine",
    "read_channels",
    "read_volume",
    "spacing_of",
    "write_volume",
    "zoom_affine",
]
