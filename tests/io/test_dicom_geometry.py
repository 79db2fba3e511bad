"""DICOM stacks that are not a regular grid: gantry tilt, irregular steps and missing slices
are read onto a regular grid with every pixel where the scanner put it, or refused with
``dicom_geometry="strict"``; one averaged spacing is never used.

The references are computed here from the tags alone: where each stored pixel lies in the
world (ImagePositionPatient + column/row steps along ImageOrientationPatient), and what a
linear interpolation between two known pixels gives.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from revmed.errors import InputError, RevmedWarning
from revmed.io import read_volume

FLIP_XY = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS
SPACING = (0.8, 0.5)  # DICOM order: between rows, between columns
ROW = np.array([1.0, 0.0, 0.0])
TILT = np.radians(18.5)  # an 18.5 degree gantry tilt about the x axis, as on the GE corpus case
COL = np.array([0.0, np.cos(TILT), -np.sin(TILT)])
NORMAL = np.cross(ROW, COL)
IOP = [*ROW, *COL]
FIRST = np.array([-20.0, -10.0, 40.0])


def _stored(slices=6, rows=12, columns=10, seed=0):
    return np.random.default_rng(seed).integers(0, 3000, (slices, rows, columns)).astype(np.int16)


def _world(ipp, r, c):
    """RAS position of pixel (row r, column c) of a slice at ``ipp`` (LPS)."""
    return FLIP_XY @ (ipp + c * SPACING[1] * ROW + r * SPACING[0] * COL)


def _voxel_of(volume, world):
    index = np.linalg.inv(volume.affine) @ np.append(world, 1.0)
    return index[:3]


def _read(folder, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_volume(folder, **kwargs)
    return volume, [str(w.message) for w in caught if issubclass(w.category, RevmedWarning)]


def test_a_tilted_stack_puts_every_pixel_where_the_scanner_put_it(tmp_path, write_ct_series):
    # the table moves straight along z: each slice steps 2 rows (1.6 mm) along the tilted
    # column direction against the last, a sheared grid
    step = 2 * SPACING[0] / np.sin(TILT)
    ipps = [FIRST + k * np.array([0.0, 0.0, step]) for k in range(6)]
    stored = _stored()
    write_ct_series(tmp_path / "ct", stored, IOP, SPACING, ipps, slope=1, intercept=-1024)

    volume, notes = _read(tmp_path / "ct")

    assert len(notes) == 1 and "18.5 degrees off their normal (gantry tilt)" in notes[0]
    assert volume.meta["dicom_correction_mm"] > 7  # stacking along the normal misplaced it
    for k, ipp in enumerate(ipps):
        for r in (0, 5, 11):
            for c in (0, 4, 9):
                ijk = _voxel_of(volume, _world(ipp, r, c))
                np.testing.assert_allclose(ijk, np.rint(ijk), atol=1e-6)
                assert volume.array[(0, *np.rint(ijk).astype(int))] == stored[k, r, c] - 1024
    # the planes keep the slices' orientation and spacing; the normal spacing is the true one
    np.testing.assert_allclose(volume.spacing, [0.5, 0.8, step * np.cos(TILT)], atol=1e-9)
    np.testing.assert_allclose(volume.direction[:, 2], FLIP_XY @ NORMAL, atol=1e-9)
    assert volume.shape == (10, 12 + 10, 6)  # grown by the 5 x 2 rows of shift
    assert volume.array.min() == stored.min() - 1024  # pixels no slice covers: the minimum


def test_a_fractional_shift_is_interpolated_between_the_two_nearest_pixels(tmp_path,
                                                                          write_ct_series):
    step = 0.75 * SPACING[0] / np.sin(TILT)  # 0.75 of a row per slice
    ipps = [FIRST + k * np.array([0.0, 0.0, step]) for k in range(3)]
    stored = _stored(slices=3)
    write_ct_series(tmp_path / "ct", stored, IOP, SPACING, ipps, slope=1, intercept=0)

    volume, _ = _read(tmp_path / "ct")

    # slice 1 is shifted 0.75 rows: the grid row through its pixel rows r, r+1 sits 0.25
    # rows past row r of the slice (up the column direction from the first slice's rows)
    row_offset = volume.array[0, 3, :, 1]
    world = _world(ipps[0], 5, 3)  # a grid point of the first slice's lattice
    j = int(round(_voxel_of(volume, world)[1]))
    shift = ((ipps[1] - ipps[0]) @ COL) / SPACING[0]  # rows, negative: the slice moved down
    r = j - int(round(_voxel_of(volume, _world(ipps[0], 0, 3))[1])) - shift  # its row coordinate
    low = int(np.floor(r))
    expected = (1 - (r - low)) * stored[1, low, 3] + (r - low) * stored[1, low + 1, 3]
    np.testing.assert_allclose(row_offset[j], expected, rtol=1e-5)


def test_irregular_steps_are_resampled_to_the_median_step_never_averaged(tmp_path,
                                                                       write_ct_series):
    # two reconstruction zones: 2 mm then 5 mm (an averaged spacing would misplace them all)
    depths = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 13.0, 18.0])
    ipps = [np.array([0.0, 0.0, 100.0]) + d * np.array([0.0, 0.0, 1.0]) for d in depths]
    stored = np.stack([np.full((4, 5), 10 * d) for d in depths]).astype(np.int16)
    write_ct_series(tmp_path / "ct", stored, [1, 0, 0, 0, 1, 0], (1.0, 1.0), ipps, slope=1,
                    intercept=0)

    volume, notes = _read(tmp_path / "ct")

    assert "slice steps from 2 to 5 mm (median 2)" in notes[0]
    count = int(round(18 / 2)) + 1
    assert volume.shape == (5, 4, count)
    np.testing.assert_allclose(volume.spacing[2], 18 / (count - 1))
    z = volume.affine[2, 3] + np.arange(count) * volume.affine[2, 2]  # world z of each slice
    np.testing.assert_allclose(z[[0, -1]], [100.0, 118.0])
    # values are 10 x depth at every slice: linear in depth, so interpolation is exact
    np.testing.assert_allclose(volume.array[0, 2, 1, :], 10 * (z - 100.0), rtol=1e-5)


def test_a_missing_slice_is_said_and_filled_between_its_neighbours(tmp_path, write_ct_series):
    ipps = [FIRST + k * 2.5 * NORMAL for k in (0, 1, 2, 4, 5)]  # slice 3 missing
    stored = _stored(slices=5, seed=2)
    write_ct_series(tmp_path / "ct", stored, IOP, SPACING, ipps, slope=1, intercept=0)

    volume, notes = _read(tmp_path / "ct")

    assert "(about 1 slice(s) missing)" in notes[0] and "largest correction" in notes[0]
    assert volume.shape == (10, 12, 6)
    np.testing.assert_array_equal(volume.array[0, :, :, 2], stored[2].T)
    np.testing.assert_array_equal(volume.array[0, :, :, 4], stored[3].T)
    np.testing.assert_allclose(volume.array[0, :, :, 3],
                               (stored[2].T.astype(float) + stored[3].T) / 2, rtol=1e-6)


def test_strict_refuses_a_stack_off_the_grid_with_one_line(tmp_path, write_ct_series):
    ipps = [FIRST + k * np.array([0.0, 0.0, 3.0]) for k in range(4)]
    write_ct_series(tmp_path / "ct", _stored(slices=4), IOP, SPACING, ipps)
    with pytest.raises(InputError) as info:
        read_volume(tmp_path / "ct", dicom_geometry="strict")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "ct")) and "\n" not in message
    assert "gantry tilt" in message and "misplace pixels by up to" in message
    assert info.value.fix == "dicom_geometry"


def test_a_regular_stack_is_read_as_it_is_without_a_note(tmp_path, write_ct_series):
    ipps = [FIRST + k * 2.5 * NORMAL + [0, 0, 1e-4 * (-1) ** k] for k in range(5)]
    stored = _stored(slices=5)
    write_ct_series(tmp_path / "ct", stored, IOP, SPACING, ipps, slope=1, intercept=0)
    volume, notes = _read(tmp_path / "ct", dicom_geometry="strict")
    assert notes == [] and "dicom_geometry" not in volume.meta
    np.testing.assert_array_equal(volume.array[0], np.transpose(stored, (2, 1, 0)))


@pytest.mark.parametrize("plane", ["coronal", "sagittal", "oblique decubitus"])
def test_every_plane_puts_each_pixel_where_its_tags_say(tmp_path, write_ct_series, plane):
    row, col = {"coronal": ([1, 0, 0], [0, 0, -1]), "sagittal": ([0, 1, 0], [0, 0, -1]),
                "oblique decubitus": ([0.0, 0.6, 0.8], [-1.0, 0.0, 0.0])}[plane]
    row, col = np.array(row, dtype=float), np.array(col, dtype=float)
    normal = np.cross(row, col)
    ipps = [np.array([5.0, -7.0, 30.0]) + k * 3.0 * normal for k in range(4)]
    stored = _stored(slices=4, seed=5)
    write_ct_series(tmp_path / "ct", stored, [*row, *col], SPACING, ipps, slope=1, intercept=0)
    volume, notes = _read(tmp_path / "ct")
    assert notes == []
    inverse = np.linalg.inv(volume.affine)
    for k, ipp in enumerate(ipps):
        for r, c in ((0, 0), (11, 9), (4, 7)):
            world = FLIP_XY @ (ipp + c * SPACING[1] * row + r * SPACING[0] * col)
            ijk = (inverse @ np.append(world, 1.0))[:3]
            np.testing.assert_allclose(ijk, np.rint(ijk), atol=1e-6)
            assert volume.array[(0, *np.rint(ijk).astype(int))] == stored[k, r, c]
