"""Headers whose values other readers take silently for something else: each is refused with
one line naming the file (before, each was read with a wrong geometry and exit code 0), and
random corruptions of the headers of every format read back either as a finite volume in the
right place or as one error line, never as a traceback or a silent change."""

from __future__ import annotations

import struct
import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revmed.errors import InputError, RevmedError
from revmed.io import Volume, make_affine, read_volume, write_volume

ARRAY = np.random.default_rng(0).uniform(0, 100, (1, 6, 7, 8)).astype(np.float32)
AFFINE = make_affine([1.5, 1.5, 2.0], origin=[10.0, 20.0, 30.0])


def _written(path, suffix):
    return write_volume(Volume(ARRAY.copy(), AFFINE.copy()), path / f"v{suffix}")


def _edit_header(path, old: bytes, new: bytes):
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


def _refused(path, message):
    with pytest.raises(InputError) as info:
        read_volume(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert message in str(info.value)


def _itk_origin(path):
    with warnings.catch_warnings():
        return np.array(sitk.ReadImage(str(path)).GetOrigin())


def test_a_metaimage_origin_that_is_not_a_number_is_refused(tmp_path):
    path = _edit_header(_written(tmp_path, ".mha"), b"Offset = -10 -20 30",
                        b"Offset = nan 0 0")
    assert _itk_origin(path)[0] == 0  # what ITK alone reads: the origin made up
    _refused(path, "its Offset (nan 0 0) is not three numbers")


def test_a_metaimage_transform_with_a_scale_is_refused(tmp_path):
    path = _edit_header(_written(tmp_path, ".mha"), b"TransformMatrix = -1 0 0 0 -1 0 0 0 1",
                        b"TransformMatrix = 2 0 0 0 2 0 0 0 2")
    _refused(path, "is not a rotation")


def test_a_nrrd_spatial_axis_without_a_direction_is_refused(tmp_path):
    path = _edit_header(_written(tmp_path, ".nrrd"), b"space directions: (-1.5,0,0)",
                        b"space directions: none")
    with warnings.catch_warnings():
        assert sitk.ReadImage(str(path)).GetSpacing()[0] == 1.0  # ITK invents 1 mm
    _refused(path, "a spatial axis has the space direction 'none'")


@pytest.mark.parametrize(("suffix", "old", "new"), [
    (".nrrd", b"sizes: 6 7 8", b"sizes: 6 7 7"),
    (".mha", b"DimSize = 6 7 8", b"DimSize = 6 7 7"),
])
def test_a_header_declaring_fewer_voxels_than_the_data_hold_is_refused(tmp_path, suffix, old,
                                                                      new):
    path = _edit_header(_written(tmp_path, suffix), old, new)
    _refused(path, "holds more than the")


def test_an_uncompressed_nrrd_with_more_data_than_declared_is_refused(tmp_path):
    header = (b"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\n"
              b"sizes: 6 7 7\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain "
              b"domain domain\nendian: little\nencoding: raw\nspace origin: (0,0,0)\n\n")
    path = tmp_path / "raw.nrrd"
    path.write_bytes(header + ARRAY.tobytes())  # 6x7x8 voxels for a 6x7x7 header
    _refused(path, "sizes that do not match the data")


def _nifti_with_negative_pixdim(path, qform: bool, sform: bool):
    image = nib.Nifti1Image(np.arange(120, dtype=np.int16).reshape(4, 5, 6),
                            np.diag([2.0, 3.0, 4.0, 1.0]))
    image.set_qform(np.diag([2.0, 3.0, 4.0, 1.0]), code=1 if qform else 0)
    image.set_sform(np.diag([2.0, 3.0, 4.0, 1.0]), code=1 if sform else 0)
    nib.save(image, path)
    data = bytearray(path.read_bytes())
    data[80:84] = struct.pack("<f", -2.0)  # pixdim[1], which nibabel's writer would repair
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("qform", "sform"), [(True, False), (True, True), (False, True)])
def test_a_negative_nifti_pixdim_is_refused_because_readers_disagree(tmp_path, qform, sform):
    path = _nifti_with_negative_pixdim(tmp_path / "neg.nii", qform, sform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_nibabel = nib.load(path).affine[0, 0]
        image = sitk.ReadImage(str(path))
    by_itk = -image.GetDirection()[0] * image.GetSpacing()[0]  # LPS -> RAS
    assert (by_nibabel, by_itk) == (2.0, -2.0)  # the two readers place the voxels apart
    _refused(path, "pixdim gives a negative voxel size")


def test_a_nifti_in_metres_is_refused_because_readers_disagree(tmp_path):
    path = _written(tmp_path, ".nii")
    data = bytearray(path.read_bytes())
    data[123] = 1  # xyzt_units: NIFTI_UNITS_METER
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert nib.load(path).affine[0, 0] == -1.5 or nib.load(path).affine[0, 0] == 1.5
        assert sitk.ReadImage(str(path)).GetSpacing()[0] == 1500.0  # ITK converts to mm
    _refused(path, "its spatial unit (xyzt_units) is metres")


def test_a_dicom_slice_whose_header_cannot_be_read_fails_the_series(tmp_path):
    folder = _original(tmp_path, "dicom")
    target = sorted(folder.iterdir())[2]
    blob = target.read_bytes()
    at = blob.index(b"\x20\x00\x32\x00")  # ImagePositionPatient's tag: break its VR
    target.write_bytes(blob[:at + 4] + b"\x00\x00" + blob[at + 6:])
    with pytest.raises(InputError) as info:
        read_volume(folder)
    assert str(info.value).startswith(f"{folder}: ") and str(target) in str(info.value)


def test_a_dicom_file_naming_no_transfer_syntax_is_refused(tmp_path):
    folder = _original(tmp_path, "dicom")
    target = sorted(folder.iterdir())[1]
    blob = target.read_bytes()
    syntax = b"1.2.840.10008.1.2.1"
    at = blob.index(syntax)
    target.write_bytes(blob[:at] + b"1.2.840.10008.1.9.9" + blob[at + len(syntax):])
    _refused(folder, "as its transfer syntax, which is none")


# -- random header corruptions -----------------------------------------------------------------

FORMATS = [".nii", ".nrrd", ".mha", "dicom"]


def _original(tmp_path, fmt):
    if fmt == "dicom":
        return write_volume(Volume(np.rint(ARRAY * 10), AFFINE.copy(), meta={"units": "HU"}),
                            tmp_path / "series", format="dicom")
    return _written(tmp_path, fmt)


def _header_span(data: bytes, fmt) -> tuple[int, int]:
    if fmt == ".nii":
        return 0, 348
    if fmt == ".nrrd":
        return 0, data.index(b"\n\n")
    if fmt == ".mha":
        return 0, data.index(b"ElementDataFile")
    return 132, data.index(b"\xe0\x7f\x10\x00")  # DICOM: up to the pixel data's tag


def _corners(affine, shape):
    """World positions of the grid's eight corner voxels."""
    index = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                      for k in (0, shape[2] - 1)]).T
    return (np.asarray(affine) @ index)[:3]


def _independent(path, fmt):
    """``(shape, affine)`` as a reader other than revmed's path places the file: SimpleITK for
    NIfTI (revmed reads NIfTI with nibabel), nibabel's view of ITK's output never; pydicom's
    tags for the DICOM slices; None where that reader refuses the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "dicom":
                return _dicom_tags_grid(path)
            image = sitk.ReadImage(str(path))
    except Exception:  # noqa: BLE001  the independent reader refuses it
        return None
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ direction * np.array(image.GetSpacing())
    affine[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.array(image.GetOrigin())
    return tuple(image.GetSize())[:3], affine


def _dicom_tags_grid(folder):
    """The grid the slices' own tags describe, when they describe a regular one."""
    import pydicom

    slices = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ipps = sorted((np.array(s.ImagePositionPatient, dtype=float) for s in slices),
                  key=lambda p: p @ normal)
    spacing = np.array(slices[0].PixelSpacing, dtype=float)
    step = (ipps[-1] - ipps[0]) / (len(ipps) - 1)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ np.stack(
        [iop[:3] * spacing[1], iop[3:] * spacing[0], step], axis=1)
    affine[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ ipps[0]
    return (int(slices[0].Columns), int(slices[0].Rows), len(slices)), affine


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                min_size=1, max_size=4))
def test_random_header_corruption_reads_right_or_fails_with_one_line(tmp_path_factory, fmt,
                                                                    edits):
    """One to four random bytes of a header changed: revmed reads a finite volume where an
    independent reader places it too (or says, with a warning, what it read differently),
    or refuses with one line naming the file; never a traceback."""
    original = _original(tmp_path_factory.mktemp("corrupt"), fmt)
    target = sorted(original.iterdir())[1] if fmt == "dicom" else original
    blob = bytearray(target.read_bytes())
    start, end = _header_span(bytes(blob), fmt)
    for where, value in edits:
        blob[start + int(where * (end - start))] = value
    target.write_bytes(bytes(blob))
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            volume = read_volume(original)
    except RevmedError as exc:
        assert str(exc).startswith(str(original)) and "\n" not in str(exc)
        return
    assert np.all(np.isfinite(volume.affine))
    if said:  # read, and what was unusual said (a qform and sform apart, a resampled stack)
        return
    other = _independent(original, fmt)
    if other is None:  # only the other reader refuses it: revmed's placement must be sound
        assert np.all(np.linalg.norm(volume.affine[:3, :3], axis=0) > 0)
        return
    shape, affine = other
    assert tuple(volume.shape) == tuple(shape)
    np.testing.assert_allclose(_corners(volume.affine, volume.shape), _corners(affine, shape),
                               atol=0.01)  # float32 header values, read in float64 by one
