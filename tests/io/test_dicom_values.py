"""DICOM values a scanner cannot have meant are errors, never defaults: a RescaleSlope of 0,
pixel data shorter than the header declares, a slice without pixel data. Each is one line
naming the folder and the file, exit code 2, and no output."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from revmed.errors import InputError
from revmed.io import read_volume

IOP = [1, 0, 0, 0, 1, 0]
SPACING = (0.8, 0.8)


def _series(folder, write_ct_series, slices=4):
    stored = np.random.default_rng(1).integers(0, 2000, (slices, 6, 7)).astype(np.int16)
    ipps = [np.array([0.0, 0.0, 3.0 * k]) for k in range(slices)]
    return write_ct_series(folder, stored, IOP, SPACING, ipps, slope=1, intercept=-1024)


def _edit(path, change):
    dataset = pydicom.dcmread(path)
    change(dataset)
    dataset.save_as(path)
    return path


@pytest.mark.parametrize(("change", "expected"), [
    (lambda ds: setattr(ds, "RescaleSlope", "0"), r"has RescaleSlope 0; its stored values"),
    (lambda ds: setattr(ds, "RescaleSlope", "nan"), "has RescaleSlope not a number"),
    (lambda ds: setattr(ds, "PixelData", ds.PixelData[:40]),
     r"holds 40 bytes of pixel data where its header declares 84 \(a truncated file\)"),
    (lambda ds: delattr(ds, "PixelData"), r"has no pixel data \(PixelData is missing\)"),
])
def test_values_a_scanner_cannot_have_meant_are_one_error_line(tmp_path, write_ct_series,
                                                              change, expected):
    files = _series(tmp_path / "ct", write_ct_series)
    bad = _edit(files[2], change)
    with pytest.raises(InputError, match=expected) as info:
        read_volume(tmp_path / "ct")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "ct")) and bad.name in message
    assert "\n" not in message


def test_a_truncated_slice_fails_the_command_with_no_output(cli, tmp_path, write_ct_series,
                                                           tiny_model):
    files = _series(tmp_path / "ct", write_ct_series)
    _edit(files[1], lambda ds: setattr(ds, "PixelData", ds.PixelData[:-2]))
    result = cli("infer", tmp_path / "ct", "-o", tmp_path / "out.nii.gz", "--model",
                 tiny_model, "-q")
    assert result.code == 2 and not (tmp_path / "out.nii.gz").exists()
    assert result.err.count("\n") == 1 and "a truncated file" in result.err


def test_a_slope_below_one_keeps_its_fractions(tmp_path, write_ct_series):
    files = _series(tmp_path / "ct", write_ct_series)
    (first,) = [f for f in files if float(pydicom.dcmread(f).ImagePositionPatient[2]) == 0.0]
    _edit(first, lambda ds: setattr(ds, "RescaleSlope", "0.25"))
    volume = read_volume(tmp_path / "ct")
    np.testing.assert_allclose(volume.array[0, :, :, 0],
                               pydicom.dcmread(first).pixel_array.T * 0.25 - 1024)
