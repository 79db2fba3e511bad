"""Reading and writing medical volumes with their geometry, and finding them in folders.

``read_volume``, ``read_channels`` and ``write_volume`` are the entry points; the rest of
revmed never calls nibabel, SimpleITK or pydicom directly. Every volume is a ``Volume`` with a
``(C, I, J, K)`` float32 array and a RAS+ voxel-to-millimetre affine, whatever the file format
(NIfTI, NRRD, MetaImage, DICOM series); results can also be written as derived DICOM series
and DICOM-SEG. ``revmed.io.formats`` is the one table of suffixes,
``find_cases`` the one rule for the cases of a folder, ``read_geometry`` a volume's grid from
its header.
"""

from __future__ import annotations

from revmed.io.cases import CaseSource, find_cases, scan_folder
from revmed.io.channels import read_channels
from revmed.io.checks import check_finite
from revmed.io.dicom import SeriesInfo, list_dicom_series
from revmed.io.dicom.seg import write_dicom_seg
from revmed.io.dicom.write import write_dicom_series
from revmed.io.dispatch import read_volume, write_volume
from revmed.io.formats import case_name, full_suffix, volume_suffix
from revmed.io.geometry import Geometry, read_geometry
from revmed.io.volume import Volume, make_affine, spacing_of, zoom_affine

__all__ = [
    "CaseSource",
    "Geometry",
    "SeriesInfo",
    "Volume",
    "case_name",
    "check_finite",
    "find_cases",
    "full_suffix",
    "list_dicom_series",
    "make_affine",
    "read_channels",
    "read_geometry",
    "read_volume",
    "scan_folder",
    "spacing_of",
    "volume_suffix",
    "write_dicom_seg",
    "write_dicom_series",
    "write_volume",
    "zoom_affine",
]
