"""Errors a user can cause: one line, starting with the path; atomic writes leave no debris."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from revmed.errors import InputError, OutputError
from revmed.io import Volume, check_finite, read_channels, read_volume, write_volume


def small_volume(channels=1) -> Volume:
    array = np.random.default_rng(0).normal(size=(channels, 6, 5, 4)).astype(np.float32)
    return Volume(array, np.diag([0.7, 0.9, 2.5, 1.0]))


def read_error(path, match, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as info:
        read_volume(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    read_error(tmp_path / "absent.nii.gz", "no such file")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file(tmp_path, suffix):
    path = write_volume(small_volume(), tmp_path / f"vol{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    read_error(path, "truncated")


def test_truncated_gzip_surfaces_despite_lazy_loading(tmp_path):
    big = Volume(np.random.default_rng(1).normal(size=(1, 16, 16, 16)).astype(np.float32), np.eye(4))
    path = write_volume(big, tmp_path / "vol.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # header intact: nib.load alone does not notice
    nib.load(str(path))
    read_error(path, "truncated or corrupt")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".dcm"])
def test_text_file_with_image_suffix(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("these are my notes, not an image\n" * 20)
    read_error(path, "not a|cannot read")


def test_gzip_of_text_named_nii_gz(tmp_path):
    path = tmp_path / "text.nii.gz"
    path.write_bytes(gzip.compress(b"hello " * 100))
    read_error(path, "not a readable NIfTI")


def test_2d_images(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 10), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    read_error(tmp_path / "flat.nii.gz", "expected a 3D volume")
    sitk.WriteImage(sitk.Image(8, 10, sitk.sitkFloat32), str(tmp_path / "flat.mha"))
    read_error(tmp_path / "flat.mha", "expected a 3D volume")
    nib.save(nib.Nifti1Image(np.zeros((8, 10, 1), np.float32), np.eye(4)), tmp_path / "slice.nii")
    read_error(tmp_path / "slice.nii", "single slice")


def test_zero_size_dimension(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((0, 4, 4), np.float32), np.eye(4)), tmp_path / "empty.nii.gz")
    read_error(tmp_path / "empty.nii.gz", "zero-size dimension")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG\r\n")
    read_error(path, "unsupported format '.png'")
    with pytest.raises(OutputError, match="cannot write format '.nhdr'"):
        write_volume(small_volume(), tmp_path / "out.nhdr")


def test_series_argument_needs_a_folder(tmp_path):
    path = write_volume(small_volume(), tmp_path / "vol.nii.gz")
    read_error(path, "can only be chosen among DICOM files", series="1.2.3")


def test_check_finite_counts_bad_voxels():
    volume = small_volume(channels=2)
    volume.source = "scan.nii.gz"
    assert check_finite(volume) is volume
    volume.array[1, 0, 0, 0] = np.nan
    volume.array[1, 1, 0, 0] = np.inf
    volume.array[0, 2, 0, 0] = -np.inf
    expected = (r"^scan.nii.gz: 3 of 240 voxels are not finite \(1 NaN, 2 infinite\) "
                r"in channel\(s\) \[0, 1\]$")
    with pytest.raises(InputError, match=expected):
        check_finite(volume)


def test_check_finite_names_the_channel_file(tmp_path):
    good = write_volume(small_volume(), tmp_path / "t1.nii.gz")
    bad_volume = small_volume()
    bad_volume.array[0, 3, 3, 3] = np.nan
    bad = write_volume(bad_volume, tmp_path / "t2.nii.gz")
    with pytest.raises(InputError, match="1 of 120 voxels are not finite") as info:
        check_finite(read_channels([good, bad]))
    assert str(info.value).startswith(str(bad))


def test_integer_output_refuses_values_that_do_not_fit(tmp_path):
    volume = small_volume()
    volume.array[0, 0, 0, 0] = 300
    with pytest.raises(OutputError, match="do not fit in uint8"):
        write_volume(volume, tmp_path / "labels.nii.gz", dtype=np.uint8)
    assert list(tmp_path.iterdir()) == []


# --- atomicity: a writer failing half-way leaves neither the target nor a temporary file -------

def _write_part_then_fail(filename) -> None:
    with open(filename, "wb") as handle:
        handle.write(b"partial image data")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, suffix):
    def broken_itk_execute(writer, image):
        try:
            _write_part_then_fail(writer.GetFileName())
        except OSError:
            raise RuntimeError(
                "Exception thrown in SimpleITK ImageFileWriter_Execute: x.cxx:1:\nITK ERROR: disk full"
            ) from None

    monkeypatch.setattr(nib, "save", lambda image, filename: _write_part_then_fail(filename))
    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", broken_itk_execute)
    target = tmp_path / f"out{suffix}"
    with pytest.raises(OutputError) as info:
        write_volume(small_volume(), target)
    message = str(info.value)
    assert message.startswith(f"{target}: cannot write") and "\n" not in message
    assert "disk full" in message or "No space left" in message  # the writer really ran
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = write_volume(small_volume(), tmp_path / "out.mha")
    before = target.read_bytes()

    def broken_execute(self, image):
        raise RuntimeError("ITK ERROR: disk full")

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", broken_execute)
    with pytest.raises(OutputError):
        write_volume(small_volume(channels=2), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mha"]


def test_missing_output_folder_is_created(tmp_path):
    volume = small_volume()
    target = write_volume(volume, tmp_path / "new" / "deeper" / "out.nii.gz")
    np.testing.assert_array_equal(read_volume(target).array, volume.array)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match="cannot create its folder"):
        write_volume(volume, tmp_path / "file" / "sub" / "out.nii.gz")


def test_a_flipped_bit_in_gzip_data_fails_the_checksum(tmp_path):
    """Before, a .nii.gz with one flipped bit in its compressed data was read with a few
    hundred voxels changed, and nothing said (the gzip CRC is at the end of the stream,
    which a read of the voxels alone never reaches)."""
    array = np.random.default_rng(2).uniform(-1000, 1000, (1, 64, 64, 64)).astype(np.float32)
    path = write_volume(Volume(array, np.eye(4)), tmp_path / "v.nii.gz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    changed = np.count_nonzero(nib.load(str(path)).get_fdata()[None] != array)
    assert changed > 0  # what nibabel alone reads: changed voxels, no error
    read_error(path, r"corrupt: its compressed data fails the gzip checksum .*CRC check failed")
