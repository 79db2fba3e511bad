"""Volumes an adversarial tester makes: damaged geometry, damaged compressed payloads, DICOM
whose tags disagree, RT dose grids, files that are not files, libraries that print; and what
revmed decides for unusual but valid geometry (shear, qform against sform)."""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import tempfile
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from revmed.errors import InputError, RevmedWarning
from revmed.io import Volume, make_affine, read_volume, write_volume

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
DATA = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)


def raw_nifti(path: Path, edit) -> Path:
    """A .nii file whose header is written as ``edit`` leaves it (nibabel's image writer would
    repair it on the way)."""
    header = nib.Nifti1Header()
    header.set_data_shape(DATA.shape)
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    edit(header)
    with open(path, "wb") as handle:
        header.write_to(handle)
        handle.write(b"\0" * (352 - handle.tell()))
        handle.write(DATA.tobytes(order="F"))
    return path


def _zero_pixdim(h):
    h["sform_code"] = 0
    h["pixdim"][1:4] = [1.0, 0.0, 1.0]


def _sform(row, values):
    def edit(h):
        h[f"srow_{row}"][:] = values
    return edit


def _nan_quaternion(h):
    h["sform_code"] = 0
    h["quatern_b"] = np.nan


def _parallel_axes(h):  # the third axis runs along the first: a rank-deficient matrix
    h["srow_x"][:] = [1, 0, 1, 0]
    h["srow_z"][:] = [0, 0, 0, 0]


DEGENERATE = {
    "zero pixdim": (_zero_pixdim, "voxel size of 1x0x1 mm"),
    "zero sform": (lambda h: [_sform(r, [0, 0, 0, 0])(h) for r in "xyz"], "voxel size 0x0x0"),
    "NaN in the sform": (_sform("x", [np.nan, 0, 0, 0]), "NaN"),
    "infinite sform": (_sform("y", [0, np.inf, 0, 0]), "infinite"),
    "NaN quaternion": (_nan_quaternion, "NaN"),
    "huge spacing": (_sform("x", [3e38, 0, 0, 0]), "voxel size 3e+38"),
    "parallel axes": (_parallel_axes, "two voxel axes point the same way"),
    "far origin": (_sform("x", [1, 0, 0, 1e20]), "from the origin"),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_a_degenerate_nifti_geometry_is_refused_when_read(tmp_path, name):
    edit, needle = DEGENERATE[name]
    path = raw_nifti(tmp_path / "bad.nii", edit)
    with pytest.raises(InputError, match="geometry is damaged") as refused:
        read_volume(path)
    assert str(path) in str(refused.value) and needle in str(refused.value)


@pytest.mark.parametrize("spacing", ["1e300", "0", "nan"])
def test_a_degenerate_nrrd_geometry_is_refused_when_read(tmp_path, spacing):
    path = tmp_path / "bad.nrrd"
    header = (f"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: 8 8 8\nspace directions: ({spacing},0,0) (0,1,0) (0,0,1)\n"
              "endian: little\nencoding: raw\nspace origin: (0,0,0)\n\n")
    path.write_bytes(header.encode() + DATA.tobytes())
    with pytest.raises(InputError) as refused:
        read_volume(path)
    assert str(path) in str(refused.value)


def test_a_negative_metaimage_spacing_is_not_read_as_1_mm(tmp_path):
    path = tmp_path / "neg.mha"
    header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nCompressedData = False\n"
              "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\nElementSpacing = -1 1 1\n"
              "DimSize = 8 8 8\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + DATA.tobytes())
    with pytest.raises(InputError, match="states a voxel size of -1x1x1 mm, which ITK reads as "
                                         "1x1x1"):
        read_volume(path)


def test_a_degenerate_file_in_a_batch_is_one_case_failing(cli, tmp_path, tiny_model):
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in ("a", "c"):
        write_volume(Volume(DATA[None] - 500, make_affine((1, 1, 2))), cases / f"{name}.nii.gz")
    raw_nifti(cases / "b.nii", _sform("x", [np.nan, 0, 0, 0]))
    result = cli("infer", cases, "-o", tmp_path / "out", "--model", tiny_model, "--quiet")
    assert result.code == 2 and "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert any("b.nii" in e and "NaN" in e for e in errors)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "c.nii.gz"]


# --- unusual but valid geometry: the decisions of docs/reliability.md -------------------------

def test_a_sheared_grid_is_read_with_a_warning_and_kept_exactly(tmp_path):
    sheared = np.eye(4)
    sheared[0, 1] = 0.5  # j leans 26.6 degrees towards x
    path = raw_nifti(tmp_path / "sheared.nii", _sform("x", sheared[0]))
    with pytest.warns(RevmedWarning, match="sheared .26.6 degrees"):
        volume = read_volume(path)
    np.testing.assert_array_equal(volume.affine, sheared)
    out = write_volume(volume, tmp_path / "out.nii.gz")
    np.testing.assert_allclose(nib.load(out).header.get_sform(), sheared, atol=1e-6)
    with pytest.warns(RevmedWarning):
        np.testing.assert_allclose(read_volume(out).affine, sheared, atol=1e-6)


def test_qform_and_sform_that_disagree_warn_and_the_sform_wins(tmp_path):
    path = raw_nifti(tmp_path / "two.nii", _sform("x", [1, 0, 0, 50]))
    with pytest.warns(RevmedWarning, match="qform and sform place the grid up to 50 mm apart"):
        volume = read_volume(path)
    assert volume.affine[0, 3] == 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing forms, or one of them unset: no warning
        read_volume(raw_nifti(tmp_path / "one.nii", lambda h: None))
        read_volume(raw_nifti(tmp_path / "s.nii", lambda h: h.__setitem__("qform_code", 0)))


def test_the_cli_shows_a_warning_as_one_line(tmp_path):
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    path = raw_nifti(tmp_path / "sheared.nii", _sform("x", sheared[0]))
    done = _revmed("info", path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"warning: {path}: the voxel axes are sheared (26.6 "
                                        "degrees from perpendicular); revmed keeps the grid as "
                                        "it is, so outputs are on the same sheared grid"]


# --- damaged compressed payloads ---------------------------------------------------------------

def _payload_start(data: bytes, suffix: str) -> int:
    if suffix == ".nrrd":
        return data.index(b"\n\n") + 2
    return data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")


@pytest.fixture(params=[".nrrd", ".mha"])
def compressed(request, tmp_path):
    """A compressed NRRD or MetaImage file as revmed writes it, and its voxels."""
    array = np.random.default_rng(0).normal(0, 100, (1, 20, 24, 28)).astype(np.float32)
    path = write_volume(Volume(array, make_affine((1, 1, 2))), tmp_path / f"v{request.param}")
    return path, array


def test_flipped_bytes_in_compressed_voxels_are_refused(compressed, tmp_path):
    path, array = compressed
    np.testing.assert_array_equal(read_volume(path).array, array)  # the clean file reads
    data = bytearray(path.read_bytes())
    start = _payload_start(bytes(data), path.suffix)
    for index in random.Random(0).sample(range(start + 16, len(data) - 16), 40):
        data[index] ^= 0xFF
    bad = tmp_path / f"bad{path.suffix}"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="compressed voxel data is damaged"):
        read_volume(bad)


def test_a_wrong_checksum_alone_is_refused(compressed, tmp_path):
    path, _ = compressed
    data = bytearray(path.read_bytes())
    data[-6 if path.suffix == ".nrrd" else -2] ^= 0x01  # gzip's CRC-32 / zlib's Adler-32
    bad = tmp_path / f"crc{path.suffix}"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="incorrect data check"):
        read_volume(bad)


def test_a_cut_compressed_file_is_refused(compressed, tmp_path):
    path, _ = compressed
    cut = tmp_path / f"cut{path.suffix}"
    cut.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(InputError, match=f"{cut}: .*(ends early|truncated|corrupt)"):
        read_volume(cut)


def test_a_damaged_detached_nrrd_data_file_is_refused(tmp_path):
    raw = gzip.compress(DATA.tobytes())
    (tmp_path / "v.raw.gz").write_bytes(raw[:-8] + bytes([raw[-8] ^ 1]) + raw[-7:])
    header = tmp_path / "v.nhdr"
    header.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 8 8 8\nspacings: 1 1 1\n"
                      "endian: little\nencoding: gzip\ndata file: v.raw.gz\n")
    with pytest.raises(InputError, match="compressed voxel data is damaged .*incorrect data"):
        read_volume(header)
    (tmp_path / "v.raw.gz").write_bytes(raw)
    np.testing.assert_array_equal(read_volume(header).array[0], DATA.transpose(2, 1, 0))


# --- DICOM -------------------------------------------------------------------------------------

IOP = [1, 0, 0, 0, 1, 0]


def _series(folder, write_ct_series, spacing=(0.8, 0.8)):
    stored = np.random.default_rng(0).integers(0, 1000, (5, 6, 7)).astype(np.int16)
    return write_ct_series(folder, stored, IOP, spacing, [[0, 0, 2.0 * k] for k in range(5)])


def test_pixel_spacing_that_differs_between_slices_is_refused(tmp_path, write_ct_series):
    files = _series(tmp_path / "dcm", write_ct_series)
    odd = pydicom.dcmread(files[2])
    odd.PixelSpacing = ["1.6", "1.6"]
    odd.save_as(files[2])
    with pytest.raises(InputError, match="different PixelSpacing .0.8x0.8, 1.6x1.6 mm"):
        read_volume(tmp_path / "dcm")


def test_a_pixel_spacing_of_zero_is_refused(tmp_path, write_ct_series):
    _series(tmp_path / "dcm", write_ct_series, spacing=(0.0, 0.8))
    with pytest.raises(InputError, match=r"PixelSpacing \[0.0, 0.8\] mm is not a voxel size"):
        read_volume(tmp_path / "dcm")


def test_an_rt_dose_grid_is_read_in_dose_units(tmp_path):
    source = get_testdata_file("rtdose.dcm")
    dataset = pydicom.dcmread(source)
    volume = read_volume(source)
    scaling = float(dataset.DoseGridScaling)
    expected = dataset.pixel_array.transpose(2, 1, 0) * scaling  # (frames, rows, columns)
    np.testing.assert_allclose(volume.array[0], expected, rtol=1e-6)
    assert volume.meta["units"] == "RELATIVE" and volume.meta["stored_dtype"] == "uint32"
    del dataset.DoseGridScaling
    dataset.save_as(tmp_path / "no-scaling.dcm")
    with pytest.raises(InputError, match="without one usable DoseGridScaling"):
        read_volume(tmp_path / "no-scaling.dcm")


def test_a_multi_frame_file_is_refused_before_reading_when_memory_is_short(monkeypatch):
    from revmed import sizes

    monkeypatch.setattr(sizes, "available_memory", lambda: 1000)
    with pytest.raises(InputError, match=r"its voxels \(10x10x15\) need about .* refused"):
        read_volume(get_testdata_file("rtdose.dcm"))


def _revmed(*args, timeout=60):
    # run outside the checkout, whose revmed/ would shadow the installed package
    return subprocess.run([sys.executable, "-m", "revmed", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=timeout,
                          cwd=tempfile.gettempdir())


def _garbage_jpeg2000(path: Path) -> Path:
    dataset = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    dataset.NumberOfFrames = 4
    noise = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51" + noise] * 4)
    dataset.save_as(path)
    return path


def _cut_mha(path: Path) -> Path:
    volume = Volume(np.ones((1, 30, 30, 30), np.float32), make_affine((1, 1, 1)))
    whole = write_volume(volume, path.with_name("whole.mha")).read_bytes()
    path.write_bytes(whole[:_payload_start(whole, ".mha") + 40])
    return path


@pytest.mark.parametrize("make", ["JPEG 2000 garbage", "a cut MetaImage", "zero pixdim"])
def test_whatever_the_library_prints_an_error_is_one_line(tmp_path, make):
    path = {"JPEG 2000 garbage": lambda: _garbage_jpeg2000(tmp_path / "j2k.dcm"),
            "a cut MetaImage": lambda: _cut_mha(tmp_path / "cut.mha"),
            "zero pixdim": lambda: raw_nifti(tmp_path / "z.nii", _zero_pixdim)}[make]()
    done = _revmed("info", path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), done.stderr


def test_a_fifo_is_refused_instead_of_hanging(tmp_path):
    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    done = _revmed("info", fifo, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {fifo}: is a FIFO (named pipe), not a regular file"
