"""Choosing the reader or writer for a path: by suffix, or the DICOM reader for a folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from revmed.errors import InputError, OutputError
from revmed.io.dicom import is_dicom_file, is_dicomdir, read_dicom_file, read_dicom_series
from revmed.io.dicom.seg import write_dicom_seg
from revmed.io.dicom.write import write_dicom_series
from revmed.io.formats import (DICOM_SUFFIXES, ITK_FORMATS, NIFTI_SUFFIXES, READ_SUFFIXES,
                               full_suffix, output_format)
from revmed.io.messages import link_problem
from revmed.io.nifti import read_nifti, write_nifti
from revmed.io.sitk_formats import read_sitk_file, write_sitk_file
from revmed.io.volume import Volume


def read_volume(path: str | os.PathLike, series: str | None = None,
                dicom_geometry: str = "resample") -> Volume:
    """Read one volume from a file, a DICOM series folder or a DICOM tree.

    ``path`` is a .nii/.nii.gz, .nrrd/.nhdr, .mha/.mhd or DICOM file, a folder of DICOM
    files (a series, or a study or DICOMDIR tree below it) or a DICOMDIR file (its tree);
    ``series`` (a SeriesInstanceUID, or ``UID:token`` for one volume of a split series) picks
    one volume where there are several. ``dicom_geometry`` says what to do with DICOM slices
    that are not on a regular grid (gantry tilt, irregular steps): ``"resample"`` them onto
    one, or refuse them (``"strict"``); see ``revmed.io.dicom.slice_grid``.
    Returns a ``Volume`` with a ``(C, I, J, K)`` float32 array and a RAS+ affine.
    Raises ``InputError`` whose message starts with the path: missing, unreadable, corrupt or
    truncated file, not a 3D image, unsupported suffix.
    """
    path = Path(path)
    try:
        path.stat()
    except OSError as exc:
        problem = link_problem(path) or ("no such file or folder" if exc.errno == errno.ENOENT
                                         else exc.strerror or str(exc))
        raise InputError(f"{path}: {problem}") from None
    if path.is_dir():
        return read_dicom_series(path, series, dicom_geometry)
    suffix = full_suffix(path).lower()
    volume_file = suffix in NIFTI_SUFFIXES or suffix in ITK_FORMATS
    if not volume_file and is_dicomdir(path):
        return read_dicom_series(path.parent, series, dicom_geometry)
    if not volume_file and (suffix in DICOM_SUFFIXES or is_dicom_file(path)):
        return read_dicom_file(path, series, dicom_geometry)
    if series is not None:
        raise InputError(f"{path}: a series ({series!r}) can only be chosen among DICOM "
                         "files", option="series")
    if suffix in NIFTI_SUFFIXES:
        return read_nifti(path)
    if suffix in ITK_FORMATS:
        return read_sitk_file(path)
    raise InputError(
        f"{path}: unsupported format {suffix or '(no suffix)'!r}; "
        f"expected one of {', '.join(READ_SUFFIXES)} or a DICOM folder"
    )


def write_volume(volume: Volume, path: str | os.PathLike, dtype=np.float32,
                 format: str | None = None, like: Volume | None = None,  # noqa: A002
                 **dicom) -> Path:
    """Write ``volume`` atomically to ``path`` and return it; a missing parent folder is made.

    The format is ``format`` (a key of ``revmed.io.formats.OUTPUT_FORMATS``) or, without it,
    the suffix of ``path`` (.nii, .nii.gz, .nrrd or .mha). Several channels become a 4D NIfTI
    (I, J, K, C) or a vector image (NRRD, MHA). ``dtype`` is the stored voxel type: float32
    by default, an integer type for label maps (values are rounded; out-of-range values raise
    ``OutputError``).

    ``format="dicom"`` makes ``path`` a series folder: a label map (``meta["units"] ==
    "label"``) becomes a DICOM-SEG (``revmed.io.dicom.seg``), anything else a derived image
    series (``revmed.io.dicom.write``); ``like`` is the volume the result was computed from
    (its DICOM source gives patient and study), and ``dicom`` holds the writers' other
    keyword arguments (``description``, ``derivation``; ``names`` for a SEG). ``dtype`` does
    not apply to DICOM, which stores int16 with a rescale (or SEG bits).
    """
    path = Path(path)
    fmt = output_format(path, format)
    _make_parent(path)
    if fmt == "dicom":
        if volume.meta.get("units") == "label":
            if like is None:
                raise OutputError(f"{path}: a DICOM-SEG needs the DICOM series it segments "
                                  "(like=the input volume)")
            names = dicom.pop("names", None) or volume.meta.get("label_names")
            return write_dicom_seg(volume, path, like, names, **dicom)
        return write_dicom_series(volume, path, like, **dicom)
    if fmt in ("nii.gz", "nii"):
        write_nifti(volume, path, dtype=dtype)
    else:
        write_sitk_file(volume, path, dtype=dtype)
    return path


def _make_parent(path: Path) -> None:
    """Create the folder ``path`` goes in (``OutputError`` when that is impossible)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create its folder {path.parent} "
                          f"({exc.strerror or exc})") from None
