"""Choosing the reader or writer for a path: by suffix, or the DICOM reader for a folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from revmed.errors import InputError, OutputError
from revmed.io.dicom import is_dicom_file, read_dicom_file, read_dicom_series
from revmed.io.formats import (DICOM_SUFFIXES, ITK_FORMATS, ITK_WRITE_SUFFIXES, NIFTI_SUFFIXES,
                               READ_SUFFIXES, WRITE_SUFFIXES, full_suffix)
from revmed.io.nifti import read_nifti, write_nifti
from revmed.io.sitk_formats import read_sitk_file, write_sitk_file
from revmed.io.volume import Volume


def read_volume(path: str | os.PathLike, series: str | None = None) -> Volume:
    """Read one volume from a file or a DICOM series folder.

    ``path`` is a .nii/.nii.gz, .nrrd/.nhdr, .mha/.mhd or DICOM file, or a folder of DICOM
    slices; ``series`` (a SeriesInstanceUID) picks one series of a folder that holds several.
    Returns a ``Volume`` with a ``(C, I, J, K)`` float32 array and a RAS+ affine.
    Raises ``InputError`` whose message starts with the path: missing, unreadable, corrupt or
    truncated file, not a 3D image, unsupported suffix.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_dicom_series(path, series)
    if series is not None:
        raise InputError(f"{path}: series={series!r} only applies to a folder of DICOM files")
    suffix = full_suffix(path).lower()
    if suffix in NIFTI_SUFFIXES:
        return read_nifti(path)
    if suffix in ITK_FORMATS:
        return read_sitk_file(path)
    if suffix in DICOM_SUFFIXES or is_dicom_file(path):
        return read_dicom_file(path)
    raise InputError(
        f"{path}: unsupported format {suffix or '(no suffix)'!r}; "
        f"expected one of {', '.join(READ_SUFFIXES)} or a DICOM folder"
    )


def write_volume(volume: Volume, path: str | os.PathLike, dtype=np.float32) -> Path:
    """Write ``volume`` atomically to ``path`` (.nii, .nii.gz, .nrrd or .mha) and return it.

    Several channels become a 4D NIfTI (I, J, K, C) or a vector image (NRRD, MHA). ``dtype``
    is the stored voxel type: float32 by default, an integer type for label maps (values are
    rounded; out-of-range values raise ``OutputError``).
    """
    path = Path(path)
    suffix = full_suffix(path).lower()
    if suffix in NIFTI_SUFFIXES:
        write_nifti(volume, path, dtype=dtype)
    elif suffix in ITK_WRITE_SUFFIXES:
        write_sitk_file(volume, path, dtype=dtype)
    else:
        raise OutputError(
            f"{path}: cannot write format {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(WRITE_SUFFIXES)}"
        )
    return path
