"""DICOM series built from pydicom's bundled CT_small.dcm, and small models to run on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from revmed.checkpoint import write_payload
from revmed.models import build_model


def ct_small_series(folder: Path, slices: int = 5, rows: int = 16, columns: int = 20,
                    step: float = 2.5, study: str | None = None, patient: str = "1CT1",
                    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
                    iop=None, first=0) -> Path:
    """CT_small.dcm copied into a series of ``slices`` files in ``folder``: new Series and SOP
    Instance UIDs, one position every ``step`` mm along the slice normal, and each slice a
    different ``rows x columns`` crop of the original pixels (int16 stored, HU = stored -
    1024). ``iop`` replaces the orientation (row cosines, column cosines)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = source.pixel_array
    series = generate_uid()
    iop = np.asarray(iop if iop is not None else [1, 0, 0, 0, 1, 0], dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    first_ipp = np.array([float(v) for v in source.ImagePositionPatient])
    for k in range(slices):
        ds = source.copy()
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if study:
            ds.StudyInstanceUID = study
        ds.PatientID = patient
        ds.ImageType = list(image_type)
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in first_ipp + (first + k) * step * normal]
        ds.SliceThickness = ds.SpacingBetweenSlices = f"{step:g}"
        ds.SliceLocation = f"{(first + k) * step:.6f}"
        ds.Rows, ds.Columns = rows, columns
        crop = pixels[40 + 3 * k:40 + 3 * k + rows, 30 + 2 * k:30 + 2 * k + columns]
        ds.PixelData = np.ascontiguousarray(crop).astype("<i2").tobytes()
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)  # no suffix, as PACS do
    return folder


@pytest.fixture(scope="session")
def sr_model(tmp_path_factory, tiny_checkpoint):
    """An untrained 2x super-resolution RevGAN checkpoint for CT (8^3 windows): fast."""
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "sr.pt", task=None,
                           sr_factors=(2, 2, 2), channels=("image",))


@pytest.fixture(scope="session")
def two_channel_model(tmp_path_factory):
    """An untrained domain-adaptation RevGAN taking channels t1 and t2 (same grid out)."""
    kwargs = {"in_channels": 2, "out_channels": 2, "width": 4, "depth": 1, "residual": True}
    data = {"in_channels": 2, "out_channels": 2, "intensity": "zscore",
            "window": [-1.0, 1.0], "sr_factors": [1, 1, 1], "sr_upsample": "trilinear",
            "channels": ["t1", "t2"]}
    path = tmp_path_factory.mktemp("model") / "da.pt"
    return write_payload(path, {
        "model": {"kind": "revgan3d", "kwargs": kwargs}, "data": data, "patch_size": [8, 8, 8],
        "preset": {"task": "da", "infer": {"overlap": 0.25, "blend": "gaussian",
                                           "sw_batch_size": 2}},
        "state": {"generator": build_model("revgan3d", **kwargs).state_dict()}})


@pytest.fixture(scope="session")
def ct_series():
    """``ct_small_series`` (above), as a fixture: the test modules cannot import conftest."""
    return ct_small_series


@pytest.fixture
def export(tmp_path, ct_series):
    """A PACS export: two patients, their studies and series (files without suffixes), a
    structure set and a localizer beside the images, and a DICOMDIR-like stray file."""
    root = tmp_path / "EXPORT"
    ct_series(root / "P1" / "ST1" / "SE1", study="1.2.3.1", patient="P1")
    ct_series(root / "P1" / "ST1" / "SE2", study="1.2.3.1", patient="P1", slices=4, step=3.0)
    ct_series(root / "P1" / "ST1" / "SCOUT", study="1.2.3.1", patient="P1", slices=3,
              image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    (root / "P1" / "ST1" / "RTSTRUCT").mkdir()
    shutil.copy(get_testdata_file("rtstruct.dcm"), root / "P1" / "ST1" / "RTSTRUCT" / "RS1")
    ct_series(root / "P2" / "ST7" / "SE1", study="1.2.3.2", patient="P2", slices=6)
    (root / "P2" / "notes.txt").write_text("exported by the PACS")
    return root


CORPUS = Path(__file__).resolve().parents[2] / "data" / "fixtures" / "dicom" / "corpus.tar.xz"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """The scanner DICOM of tests/data/fixtures/dicom (README there), unpacked once per session."""
    import tarfile

    root = tmp_path_factory.mktemp("scanner-dicom")
    with tarfile.open(CORPUS) as archive:
        archive.extractall(root, filter="data")
    return root / "corpus"
