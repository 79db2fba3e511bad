"""Multi-channel input: a 4D NIfTI and one 3D file per channel must give the same Volume."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from revmed.errors import InputError
from revmed.io import Volume, read_channels, read_volume, write_volume


def channel_stack(affine, channels=3, shape=(5, 6, 4)) -> Volume:
    array = np.random.default_rng(7).normal(size=(channels, *shape)).astype(np.float32)
    return Volume(array, affine)


def test_4d_nifti_and_list_of_3d_files_agree(tmp_path, oblique_affine):
    stack = channel_stack(oblique_affine())
    four_d = read_volume(write_volume(stack, tmp_path / "all.nii.gz"))
    paths = [
        write_volume(stack.with_array(stack.array[c : c + 1]), tmp_path / f"{name}{suffix}")
        for c, (name, suffix) in enumerate([("t1", ".nii.gz"), ("t2", ".nrrd"), ("flair", ".mha")])
    ]
    listed = read_channels(paths)
    np.testing.assert_array_equal(listed.array, four_d.array)
    np.testing.assert_allclose(listed.affine, four_d.affine, atol=1e-5)
    assert listed.meta["channel_names"] == ["t1", "t2", "flair"]
    assert listed.meta["channel_sources"] == [str(p) for p in paths]


def test_mismatched_shape_names_the_file(tmp_path, oblique_affine):
    first = write_volume(channel_stack(oblique_affine(), 1), tmp_path / "t1.nii.gz")
    other = write_volume(channel_stack(oblique_affine(), 1, shape=(5, 6, 3)), tmp_path / "t2.nii.gz")
    with pytest.raises(InputError, match=r"shape \(5, 6, 3\) differs") as info:
        read_channels([first, other])
    assert str(info.value).startswith(str(other))


def test_mismatched_affine_names_the_file(tmp_path, oblique_affine):
    first = write_volume(channel_stack(oblique_affine(), 1), tmp_path / "t1.nii.gz")
    shifted = oblique_affine(origin=(-40.5, 25.25, 12.625))  # 0.5 mm along z
    other = write_volume(channel_stack(shifted, 1), tmp_path / "t2.nii.gz")
    with pytest.raises(InputError, match="affine differs") as info:
        read_channels([first, other])
    assert str(info.value).startswith(str(other))


def test_affine_within_tolerance_is_accepted(tmp_path, oblique_affine):
    first = write_volume(channel_stack(oblique_affine(), 1), tmp_path / "t1.nii.gz")
    nudged = oblique_affine(origin=(-40.5, 25.25, 12.125 + 1e-5))
    other = write_volume(channel_stack(nudged, 1), tmp_path / "t2.mha")
    assert read_channels([first, other]).channels == 2


def test_file_with_several_channels_is_refused(tmp_path, oblique_affine):
    single = write_volume(channel_stack(oblique_affine(), 1), tmp_path / "t1.nii.gz")
    multi = write_volume(channel_stack(oblique_affine(), 2), tmp_path / "both.nii.gz")
    with pytest.raises(InputError, match="has 2 channels") as info:
        read_channels([single, multi])
    assert str(info.value).startswith(str(multi))


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_4d_scalar_image_reads_as_channels(tmp_path, suffix):
    frames = [np.full((4, 3, 2), float(c), dtype=np.float32) for c in range(3)]  # (z, y, x) each
    images = []
    for frame in frames:
        image = sitk.GetImageFromArray(frame)
        image.SetSpacing((0.7, 0.9, 2.5))
        image.SetOrigin((1.0, 2.0, 3.0))
        images.append(image)
    four_d = sitk.JoinSeries(images)  # size (2, 3, 4, 3): x, y, z, channel
    sitk.WriteImage(four_d, str(tmp_path / f"stack{suffix}"))
    volume = read_volume(tmp_path / f"stack{suffix}")
    assert volume.array.shape == (3, 2, 3, 4)
    assert [float(volume.array[c].mean()) for c in range(3)] == [0.0, 1.0, 2.0]
    np.testing.assert_allclose(volume.affine, np.diag([-0.7, -0.9, 2.5, 1.0]) + np.array(
        [[0, 0, 0, -1.0], [0, 0, 0, -2.0], [0, 0, 0, 3.0], [0, 0, 0, 0]]))
