"""Shared helpers for the volume I/O tests: oblique geometries and hand-made DICOM series."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def rotation(angles) -> np.ndarray:
    """``Rz(a) @ Ry(b) @ Rx(c)`` for ``angles = (a, b, c)`` in radians; a proper rotation."""
    a, b, c = angles
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


@pytest.fixture
def oblique_affine():
    """Factory for a RAS+ affine with anisotropic spacing, a rotated direction and an offset."""

    def make(spacing=(0.7, 0.9, 2.5), angles=(0.3, -0.5, 0.7), origin=(-40.5, 25.25, 12.125)):
        affine = np.eye(4)
        affine[:3, :3] = rotation(angles) * np.asarray(spacing, dtype=np.float64)[None, :]
        affine[:3, 3] = origin
        return affine

    return make


@pytest.fixture
def write_ct_series():
    """Factory writing a CT series with pydicom: one file per slice, in a shuffled order.

    ``stored`` is ``(S, rows, columns)`` int16 stored values; slice ``s`` is placed at
    ``positions[s]`` (LPS mm). ``iop`` is ImageOrientationPatient (row cosines, then column
    cosines), ``pixel_spacing`` is (between rows, between columns) as in DICOM. ``slope`` may be
    one number or one per slice. Returns the written paths.
    """

    def write(folder: Path, stored, iop, pixel_spacing, positions, *, slope=2.0, intercept=-1024.0,
              series_uid=None, description="test series", seed=0) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        series_uid = series_uid or generate_uid()
        study_uid, frame_uid = generate_uid(), generate_uid()
        slopes = np.broadcast_to(np.asarray(slope, dtype=np.float64), (len(stored),))
        order = list(range(len(stored)))
        random.Random(seed).shuffle(order)  # file names and write order do not follow slices
        paths = []
        for rank, s in enumerate(order):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.Modality = "CT"
            ds.PatientID = "PHANTOM"
            ds.SeriesDescription = description
            ds.InstanceNumber = s + 1
            pixels = np.asarray(stored[s], dtype="<i2")
            ds.Rows, ds.Columns = pixels.shape
            ds.PixelSpacing = [f"{v:.10g}" for v in pixel_spacing]
            ds.ImageOrientationPatient = [f"{v:.10g}" for v in iop]
            ds.ImagePositionPatient = [f"{v:.10g}" for v in positions[s]]
            ds.SliceThickness = "1"
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope = f"{slopes[s]:g}"
            ds.RescaleIntercept = f"{intercept:g}"
            ds.RescaleType = "HU"
            ds.PixelData = pixels.tobytes()
            path = folder / f"img{rank:03d}_{ds.SOPInstanceUID[-10:]}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths

    return write
