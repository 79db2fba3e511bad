"""Round trips through every writable format, and agreement with SimpleITK's own reading."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from revmed.io import Volume, read_volume, write_volume

FORMATS = [".nii", ".nii.gz", ".nrrd", ".mha"]
FLIP_XY = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS


def ras_from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The test's own conversion: SimpleITK image -> ``(I, J, K)`` array and RAS+ affine."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = FLIP_XY @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = FLIP_XY @ np.array(image.GetOrigin())
    return array, affine


def random_volume(shape=(5, 6, 4), channels=1, seed=0, affine=None) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.normal(0, 100, size=(channels, *shape)).astype(np.float32)
    return Volume(array, np.eye(4) if affine is None else affine)


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_keeps_array_and_oblique_affine(tmp_path, oblique_affine, suffix):
    volume = random_volume(affine=oblique_affine())
    path = write_volume(volume, tmp_path / f"vol{suffix}")
    back = read_volume(path)
    assert back.array.shape == (1, 5, 6, 4)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    np.testing.assert_allclose(back.spacing, [0.7, 0.9, 2.5], atol=1e-6)
    assert back.source == str(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_multichannel(tmp_path, oblique_affine, suffix):
    volume = random_volume(channels=3, affine=oblique_affine())
    back = read_volume(write_volume(volume, tmp_path / f"vec{suffix}"))
    assert back.channels == 3
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_label_maps_are_stored_as_integers(tmp_path, oblique_affine, suffix, dtype):
    labels = np.random.default_rng(1).integers(0, 4, size=(1, 5, 6, 4)).astype(np.float32)
    path = write_volume(Volume(labels, oblique_affine()), tmp_path / f"lab{suffix}", dtype=dtype)
    stored = sitk.ReadImage(str(path)) if suffix in (".nrrd", ".mha") else None
    if stored is None:
        assert nib.load(str(path)).get_data_dtype() == np.dtype(dtype)
    else:
        assert sitk.GetArrayViewFromImage(stored).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(read_volume(path).array, labels)


def test_nifti_read_by_simpleitk_agrees_with_revmed(tmp_path, oblique_affine):
    volume = random_volume(affine=oblique_affine())
    path = write_volume(volume, tmp_path / "vol.nii.gz")
    array, affine = ras_from_sitk(sitk.ReadImage(str(path)))
    ours = read_volume(path)
    np.testing.assert_array_equal(ours.array[0], array)
    np.testing.assert_allclose(ours.affine, affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"])
def test_files_written_by_simpleitk_read_with_revmed(tmp_path, suffix):
    data_zyx = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)  # (z, y, x)
    image = sitk.GetImageFromArray(data_zyx)
    image.SetSpacing((0.7, 0.9, 2.5))
    direction_lps = np.array([[0.0, 0.6, 0.8], [1.0, 0.0, 0.0], [0.0, 0.8, -0.6]])  # oblique, det 1
    image.SetDirection(direction_lps.ravel().tolist())
    image.SetOrigin((12.5, -30.25, 7.0))
    path = tmp_path / f"sitk{suffix}"
    sitk.WriteImage(image, str(path))

    volume = read_volume(path)
    # Written by hand: voxel (i, j, k) is data_zyx[k, j, i]; RAS column = flip(LPS column) * spacing.
    assert volume.array.shape == (1, 5, 6, 4)
    assert volume.array[0, 4, 1, 2] == data_zyx[2, 1, 4]
    expected = np.array([
        [-0.0, -0.6 * 0.9, -0.8 * 2.5, -12.5],
        [-1.0 * 0.7, -0.0, -0.0, 30.25],
        [0.0, 0.8 * 0.9, -0.6 * 2.5, 7.0],
        [0, 0, 0, 1],
    ])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-5)


# --- property: random spacing, rotation (proper or improper), origin and shape ----------------

def _rotation_from_quaternion(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


_quaternions = st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(
    lambda q: np.linalg.norm(q) > 0.1
)


@settings(max_examples=20, deadline=None)
@given(
    suffix=st.sampled_from([".nii.gz", ".mha", ".nrrd"]),
    shape=st.tuples(*[st.integers(2, 5)] * 3),
    spacing=st.tuples(*[st.floats(0.2, 5.0)] * 3),
    quaternion=_quaternions,
    mirror=st.booleans(),
    origin=st.tuples(*[st.floats(-100.0, 100.0)] * 3),
    channels=st.integers(1, 2),
)
def test_round_trip_property(tmp_path_factory, suffix, shape, spacing, quaternion, mirror, origin,
                             channels):
    direction = _rotation_from_quaternion(quaternion) @ np.diag([1.0, 1.0, -1.0 if mirror else 1.0])
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing)[None, :]
    affine[:3, 3] = origin
    volume = random_volume(shape=shape, channels=channels, seed=sum(shape), affine=affine)
    path = tmp_path_factory.mktemp("prop") / f"vol{suffix}"
    back = read_volume(write_volume(volume, path))
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_integer_dtype_rounds_to_nearest(tmp_path, suffix):
    values = np.array([0.4, 0.6, 1.5, 2.49, -1.6, 2.51], dtype=np.float32).reshape(1, 3, 2, 1)
    volume = Volume(np.repeat(values, 2, axis=3), np.eye(4))
    back = read_volume(write_volume(volume, tmp_path / f"lab{suffix}", dtype=np.int16))
    np.testing.assert_array_equal(back.array[0, :, :, 0].ravel(), [0, 1, 2, 2, -2, 3])
