"""DICOM out from scanner DICOM that needed correcting: a derived series and a DICOM-SEG of the
gantry-tilted Philips head CT are written on the corrected grid, and what they say is checked
by readers other than revmed's (dcm2niix for the series, highdicom for the SEG)."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom

from revmed.io import read_volume, write_volume
from revmed.io.volume import LPS_TO_RAS

TILTED = "philips_ct_study/S21610/S2010"


def _tilted(corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_volume(corpus / TILTED)


def test_a_derived_series_of_a_tilted_ct_is_on_the_corrected_grid(corpus, tmp_path):
    volume = _tilted(corpus)
    write_volume(volume, tmp_path / "derived", format="dicom", like=volume,
                 description="derived")
    first = pydicom.dcmread(sorted((tmp_path / "derived").iterdir())[0])
    assert "gantry tilt" in first.DerivationDescription and "GantryDetectorTilt" not in first

    out = tmp_path / "nii"
    out.mkdir()
    subprocess.run(["dcm2niix", "-z", "n", "-f", "v", "-o", str(out), str(tmp_path / "derived")],
                   capture_output=True, check=True)
    (converted,) = list(out.glob("*.nii"))  # one output: no tilt left to correct
    image = nib.load(converted)
    mapping = np.linalg.inv(image.affine) @ volume.affine
    np.testing.assert_allclose(mapping[:3, :3], np.diag([1, -1, 1]), atol=1e-4)
    np.testing.assert_allclose(mapping[:3, 3], [0, volume.shape[1] - 1, 0], atol=1e-3)
    theirs = image.get_fdata(dtype=np.float32)[:, ::-1, :]
    assert np.abs(theirs - volume.array[0]).max() <= 0.5  # HU stored whole, as scanners do

    again = read_volume(tmp_path / "derived")
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-4)
    assert "dicom_geometry" not in again.meta  # a regular grid now


def test_a_dicom_seg_of_a_tilted_ct_reads_back_in_place(corpus, tmp_path):
    volume = _tilted(corpus)
    labels = volume.with_array(((volume.array > 0).astype(np.float32)
                                + (volume.array > 500)))
    labels.meta["units"] = "label"
    mask = os.umask(0o022)
    try:
        write_volume(labels, tmp_path / "seg", format="dicom", like=volume,
                     names={1: "soft tissue", 2: "bone"})
    finally:
        os.umask(mask)
    assert oct(os.stat(tmp_path / "seg").st_mode & 0o777) == oct(0o755)

    seg = hd.seg.segread(tmp_path / "seg" / "seg.dcm")
    assert [seg.get_segment_description(n).SegmentLabel for n in (1, 2)] == ["soft tissue",
                                                                             "bone"]
    read_back = seg.get_volume(combine_segments=True)  # (K, J, I) voxels, LPS affine
    affine = np.diag([*np.diag(LPS_TO_RAS), 1.0]) @ read_back.affine[:, [2, 1, 0, 3]]
    values = read_back.array.transpose(2, 1, 0)
    mapping = np.linalg.inv(affine) @ labels.affine
    flips = np.rint(np.diag(mapping[:3, :3]))
    np.testing.assert_allclose(mapping[:3, :3], np.diag(flips), atol=1e-4)
    for axis, sign in enumerate(flips):
        if sign < 0:
            values = np.flip(values, axis)
    np.testing.assert_array_equal(values, labels.array[0])

    back = read_volume(tmp_path / "seg" / "seg.dcm")  # revmed reads it as the label map it is
    assert back.meta["units"] == "label"
    assert back.meta["label_names"] == {1: "soft tissue", 2: "bone"}
    mapping = np.linalg.inv(back.affine) @ labels.affine
    flips = np.rint(np.diag(mapping[:3, :3]))
    np.testing.assert_allclose(mapping[:3, :3], np.diag(flips), atol=1e-4)
    values = back.array[0]
    for axis, sign in enumerate(flips):
        if sign < 0:
            values = np.flip(values, axis)
    np.testing.assert_array_equal(values, labels.array[0])


def test_dicom_output_folders_get_the_mode_mkdir_gives(corpus, tmp_path):
    volume = _tilted(corpus)
    mask = os.umask(0o022)
    try:
        write_volume(volume, tmp_path / "series", format="dicom", like=volume)
    finally:
        os.umask(mask)
    assert oct(os.stat(tmp_path / "series").st_mode & 0o777) == oct(0o755)
    shutil.rmtree(tmp_path / "series")
