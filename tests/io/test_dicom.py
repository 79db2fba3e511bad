"""DICOM series folders: HU values, geometry from the tags, series selection, broken series."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from pydicom.uid import generate_uid

from revmed.errors import InputError
from revmed.io import list_dicom_series, read_volume

FLIP_XY = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS

# An oblique plane: row direction X in the axial plane, column direction Y tilted out of it.
A, B = 0.4, 0.6
ROW_X = np.array([np.cos(A), np.sin(A), 0.0])
COL_Y = np.array([-np.sin(A) * np.cos(B), np.cos(A) * np.cos(B), np.sin(B)])
NORMAL = np.cross(ROW_X, COL_Y)
IOP = [*ROW_X, *COL_Y]
PIXEL_SPACING = (0.9, 0.7)  # DICOM order: between rows (along COL_Y), between columns (along ROW_X)
SLICE_GAP = 2.5
FIRST_IPP = np.array([-30.0, 20.0, 100.0])  # LPS mm


def stored_values(slices=6, rows=8, columns=10, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1500, size=(slices, rows, columns)).astype(np.int16)


def positions(slices=6, step=SLICE_GAP) -> list[np.ndarray]:
    return [FIRST_IPP + s * step * NORMAL for s in range(slices)]


def assert_voxels_at_pixel_positions(volume, stored, ipps, slope=2.0, intercept=-1024.0):
    """Every stored pixel must sit, in HU, at the voxel whose world position the tags give it."""
    inverse = np.linalg.inv(volume.affine)
    for s, ipp in enumerate(ipps):
        for r in range(stored.shape[1]):
            for c in range(stored.shape[2]):
                lps = ipp + c * PIXEL_SPACING[1] * ROW_X + r * PIXEL_SPACING[0] * COL_Y
                index = inverse @ np.append(FLIP_XY @ lps, 1.0)
                ijk = np.rint(index[:3]).astype(int)
                np.testing.assert_allclose(index[:3], ijk, atol=1e-4)
                assert volume.array[(0, *ijk)] == stored[s, r, c] * slope + intercept


def test_ct_series_values_in_hu_and_geometry_from_tags(tmp_path, write_ct_series):
    stored = stored_values()
    folder = tmp_path / "ct"
    write_ct_series(folder, stored, IOP, PIXEL_SPACING, positions(), slope=2, intercept=-1024)
    (folder / "notes.txt").write_text("not an image")
    shutil.copy(get_testdata_file("rtstruct.dcm"), folder / "structures.dcm")  # DICOM, not an image

    volume = read_volume(folder)

    assert volume.array.shape == (1, 10, 8, 6)  # (C, columns, rows, slices)
    # Voxel (i, j, k) = column i, row j of the k-th slice along the normal, rescaled to HU.
    expected = np.transpose(stored, (2, 1, 0)).astype(np.float32) * 2 - 1024
    np.testing.assert_array_equal(volume.array[0], expected)
    affine = np.eye(4)
    affine[:3, 0] = FLIP_XY @ ROW_X * PIXEL_SPACING[1]
    affine[:3, 1] = FLIP_XY @ COL_Y * PIXEL_SPACING[0]
    affine[:3, 2] = FLIP_XY @ NORMAL * SLICE_GAP
    affine[:3, 3] = FLIP_XY @ FIRST_IPP
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    assert volume.meta["modality"] == "CT"
    assert volume.meta["units"] == "HU"
    assert volume.meta["series_uid"] == list_dicom_series(folder)[0].uid
    assert volume.source == str(folder)


def test_slices_stacked_against_the_normal_land_where_the_tags_say(tmp_path, write_ct_series):
    stored = stored_values(seed=3)
    ipps = positions(step=-SLICE_GAP)
    write_ct_series(tmp_path / "ct", stored, IOP, PIXEL_SPACING, ipps)
    volume = read_volume(tmp_path / "ct")
    assert_voxels_at_pixel_positions(volume, stored, ipps)


def test_each_slice_keeps_its_own_rescale_slope(tmp_path, write_ct_series):
    stored = stored_values(seed=4)
    slopes = [2.0, 0.5, 2.0, 0.25, 2.0, 2.0]
    write_ct_series(tmp_path / "ct", stored, IOP, PIXEL_SPACING, positions(), slope=slopes,
                    intercept=-1000)
    volume = read_volume(tmp_path / "ct")
    for k, slope in enumerate(slopes):
        np.testing.assert_array_equal(volume.array[0, :, :, k], stored[k].T * slope - 1000)


def test_two_series_need_a_choice(tmp_path, write_ct_series):
    folder = tmp_path / "mixed"
    uid_a, uid_b = generate_uid(), generate_uid()
    write_ct_series(folder, stored_values(seed=1), IOP, PIXEL_SPACING, positions(), series_uid=uid_a,
                    description="soft tissue")
    stored_b = stored_values(slices=4, seed=2)
    write_ct_series(folder, stored_b, IOP, PIXEL_SPACING, positions(4), series_uid=uid_b,
                    description="bone")

    with pytest.raises(InputError) as info:
        read_volume(folder)
    message = str(info.value)
    assert message.startswith(str(folder))
    assert uid_a in message and uid_b in message
    assert "6 files" in message and "4 files" in message and "bone" in message

    volume = read_volume(folder, series=uid_b)
    assert volume.meta["series_uid"] == uid_b
    np.testing.assert_array_equal(volume.array[0], np.transpose(stored_b, (2, 1, 0)) * 2.0 - 1024)

    with pytest.raises(InputError, match=uid_a):
        read_volume(folder, series="1.2.3.4")


def test_regular_series_does_not_warn(tmp_path, write_ct_series):
    write_ct_series(tmp_path / "ct", stored_values(), IOP, PIXEL_SPACING, positions())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_volume(tmp_path / "ct")


def test_non_orthonormal_orientation_is_refused(tmp_path, write_ct_series):
    folder = tmp_path / "skewed"
    write_ct_series(folder, stored_values(3), [1, 0, 0, 0.5, 1, 0], PIXEL_SPACING,
                    [FIRST_IPP + [0, 0, 2.0 * s] for s in range(3)])
    with pytest.raises(InputError, match="non-orthonormal") as info:
        read_volume(folder)
    assert str(info.value).startswith(str(folder))


def test_mixed_slice_sizes_are_refused(tmp_path, write_ct_series):
    folder = tmp_path / "sizes"
    uid = generate_uid()
    ipps = positions()
    write_ct_series(folder, stored_values(3, rows=8), IOP, PIXEL_SPACING, ipps[:3], series_uid=uid)
    write_ct_series(folder, stored_values(3, rows=9), IOP, PIXEL_SPACING, ipps[3:], series_uid=uid)
    with pytest.raises(InputError, match="mixed sizes 8x10, 9x10") as info:
        read_volume(folder)
    assert str(info.value).startswith(str(folder))


def test_slices_at_one_position_are_refused(tmp_path, write_ct_series):
    ipps = positions(3)
    write_ct_series(tmp_path / "ct", stored_values(4), IOP, PIXEL_SPACING, [*ipps, ipps[1]])
    with pytest.raises(InputError, match="same position"):
        read_volume(tmp_path / "ct")


def test_folder_without_dicom_images(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(InputError, match="no DICOM image series"):
        read_volume(tmp_path)


def test_single_bundled_slice_is_a_2d_image(tmp_path):
    source = get_testdata_file("CT_small.dcm")  # shipped inside pydicom, no download
    with pytest.raises(InputError, match="expected a 3D volume"):
        read_volume(source)
    shutil.copy(source, tmp_path / "slice")  # no suffix: recognised by its DICM magic
    with pytest.raises(InputError, match="single 2D DICOM slice"):
        read_volume(tmp_path / "slice")
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(source, folder / "a.dcm")
    with pytest.raises(InputError, match="expected a 3D volume"):
        read_volume(folder)


def test_bundled_ct_slice_stacked_into_a_series_matches_pydicom_hu(tmp_path):
    original = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = apply_modality_lut(original.pixel_array, original).astype(np.float32)  # (rows, columns)
    iop = np.array(original.ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    first = np.array(original.ImagePositionPatient, dtype=np.float64)
    for s in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [f"{v:.6f}" for v in first + 3.0 * s * normal]
        ds.InstanceNumber = s + 1
        ds.save_as(tmp_path / f"s{s}.dcm")
    volume = read_volume(tmp_path)
    assert volume.shape == (original.Columns, original.Rows, 3)
    for k in range(3):
        np.testing.assert_array_equal(volume.array[0, :, :, k], hu.T)
    row_spacing, column_spacing = map(float, original.PixelSpacing)
    np.testing.assert_allclose(volume.spacing, [column_spacing, row_spacing, 3.0], atol=1e-5)
    assert volume.meta["units"] == "HU"


def test_non_image_files_beside_the_series_are_ignored(tmp_path, write_ct_series):
    folder = tmp_path / "with_extras"
    stored = stored_values(seed=4)
    write_ct_series(folder, stored, IOP, PIXEL_SPACING, positions())
    (folder / "README.txt").write_text("exported by the PACS")
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # no image in it
    (folder / "thumbs.db").write_bytes(b"\x89PNG\r\n\x1a\n")
    volume = read_volume(folder)
    assert volume.shape == (stored.shape[2], stored.shape[1], stored.shape[0])
    np.testing.assert_array_equal(volume.array[0], np.transpose(stored, (2, 1, 0)) * 2.0 - 1024)
