"""What the CLI prints is what the user gave: paths with rich markup or emoji codes in their
names are printed as they are, `revmed info` never cuts a value, and JSON is strict JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydicom.uid import generate_uid

from revmed.cli import output
from revmed.io import Volume, make_affine, write_volume

#: Names rich would read as markup or emoji: `[/x]` raised MarkupError, `[ct]` vanished,
#: `:x:` became an emoji.
ODD = ["p[/x]", "a[ct]b", "p:x:1", "[bold]b[/]"]


def _volume(path, dtype=np.float32):
    array = np.random.default_rng(0).uniform(-1000, 300, (1, 8, 8, 6)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_volume(Volume(array, make_affine((1.0, 1.0, 2.0))), path, dtype=dtype)


@pytest.mark.parametrize("name", ODD)
def test_odd_names_are_printed_as_they_are(cli, tmp_path, name):
    path = _volume(tmp_path / name / f"{name}.nii.gz")
    shown = cli("info", path)
    assert shown.code == 0, shown.err
    assert shown.out.splitlines()[0] == str(path)
    missing = tmp_path / f"{name}-gone.nii.gz"
    refused = cli("info", missing)
    assert refused.code == 2
    assert refused.err.strip() == f"error: {missing}: no such file or folder"


def test_a_batch_into_an_odd_folder_is_written_and_reported_literally(cli, tmp_path,
                                                                      tiny_model):
    for case in ("a[ct]", "b:x:"):
        _volume(tmp_path / "in" / f"{case}.nii.gz")
    out = tmp_path / "out[/x]"
    result = cli("infer", tmp_path / "in", "-o", out, "--model", tiny_model, "--quiet")
    assert result.code == 0, result.err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a[ct].nii.gz", "b:x:.nii.gz"]
    for name in written:
        assert f"wrote {out / name}" in result.out.splitlines()


def test_eval_prints_case_names_literally(cli, tmp_path):
    for side in ("pred", "ref"):
        _volume(tmp_path / side / "c[ct]:x:.nii.gz")
    result = cli("eval", tmp_path / "pred", tmp_path / "ref")
    assert result.code == 0, result.err
    assert "c[ct]:x:" in result.out and "\\[" not in result.out


def _series(folder, uid):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    folder.mkdir(parents=True)
    study, frame = generate_uid(), generate_uid()
    for k in range(3):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, uid, frame
        ds.Modality, ds.Rows, ds.Columns = "CT", 4, 5
        ds.PixelSpacing, ds.ImageOrientationPatient = ["0.5", "0.5"], [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 2 * k]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        ds.PixelData = np.zeros((4, 5), "<i2").tobytes()
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    return folder


def test_info_shows_the_whole_series_uid_axes_and_stored_type(cli, tmp_path):
    uid = "1.2.826.0.1.3680043.8.498." + "1234567890" * 3 + "12345678"  # 64 characters
    assert len(uid) == 64
    folder = _series(tmp_path / "a-rather-long-folder-name-for-a-series" / "series", uid)
    result = cli("info", folder)
    assert result.code == 0, result.err
    lines = dict((line.split(None, 1) + [""])[:2] for line in result.out.splitlines()[1:])
    assert lines["series_uid"] == uid and "\u2026" not in result.out
    assert lines["axes"] == "LPS" and lines["stored_dtype"] == "int16"
    nifti = cli("info", "--json", _volume(tmp_path / "ras.nii.gz", dtype=np.int16))
    entry = json.loads(nifti.out)[0]
    assert entry["axes"] == "RAS" and entry["stored_dtype"] == "int16"


def test_info_json_keeps_the_good_entries_when_one_path_fails(cli, tmp_path):
    good = _volume(tmp_path / "good.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not a volume")
    result = cli("info", "--json", good, bad)
    assert result.code == 2
    entries = json.loads(result.out)
    assert [e["path"] for e in entries] == [str(good), str(bad)]
    assert entries[0]["shape"] == [8, 8, 6] and "error" not in entries[0]
    assert entries[1]["error"].startswith(f"{bad}: ")
    assert result.err.count("\n") == 1 and result.err.startswith(f"error: {bad}: ")


def test_json_on_stdout_is_strict(capsys):
    output.emit_json({"psnr": math.inf, "values": [math.nan, 1.5, -math.inf]})

    def refuse(constant):
        raise AssertionError(f"bare {constant} in the JSON")
    parsed = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert parsed == {"psnr": None, "values": [None, 1.5, None]}
