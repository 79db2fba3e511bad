"""`revmed infer` on DICOM trees and to DICOM, and what it checks before any work: output
formats, outputs that would land on inputs, broken entries of a batch, devices, channel
files, quiet runs and integer outputs."""

from __future__ import annotations

import os

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from revmed.inference import load_predictor
from revmed.io import (Volume, make_affine, read_channels, read_volume, write_volume,
                       zoom_affine)

OLD_SEG = "iunet-seg.pt"


def error_lines(result) -> list[str]:
    return [line for line in result.err.splitlines() if line.startswith("error:")]


def test_a_dicom_tree_gives_one_traceable_output_per_series(cli, sr_model, export, tmp_path):
    out = tmp_path / "out"
    result = cli("infer", export, "-o", out, "--model", sr_model)
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == [
        "P1__ST1__SE1.nii.gz", "P1__ST1__SE2.nii.gz", "P2__ST7__SE1.nii.gz"]
    assert "passing over" in result.err and "SCOUT" in result.err and "localizer" in result.err
    for name, series in [("P1__ST1__SE2", export / "P1" / "ST1" / "SE2"),
                         ("P2__ST7__SE1", export / "P2" / "ST7" / "SE1")]:
        source = read_volume(series)
        written = read_volume(out / f"{name}.nii.gz")
        assert written.shape == tuple(2 * s for s in source.shape)
        np.testing.assert_allclose(written.affine, zoom_affine(source.affine, (2, 2, 2)),
                                   atol=1e-5)


def test_dicom_out_is_a_derived_series_of_the_source(cli, sr_model, ct_series, tmp_path):
    source_folder = ct_series(tmp_path / "in" / "ct")
    target = tmp_path / "out" / "sr"
    result = cli("infer", source_folder, "-o", target, "--format", "dicom", "--model",
                 sr_model, "--quiet")
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {target}"
    source = read_volume(source_folder)
    written = read_volume(target)
    np.testing.assert_allclose(written.affine, zoom_affine(source.affine, (2, 2, 2)), atol=1e-5)
    expected = load_predictor(sr_model).predict(source).array
    assert np.abs(written.array - expected).max() <= 0.5 + 1e-3  # 1 HU steps
    first = pydicom.dcmread(sorted(target.iterdir())[0], stop_before_pixels=True)
    original = pydicom.dcmread(sorted(source_folder.iterdir())[0], stop_before_pixels=True)
    assert first.ImageType[0] == "DERIVED" and first.PatientID == original.PatientID
    assert first.StudyInstanceUID == original.StudyInstanceUID
    assert first.SeriesInstanceUID != original.SeriesInstanceUID
    assert original.SeriesInstanceUID in first.DerivationDescription
    # a batch writes one series folder per case, named like the files would be
    batch = cli("infer", source_folder.parent, "-o", tmp_path / "series", "--format", "dicom",
                "--model", sr_model, "--quiet")
    assert batch.code == 0, batch.err
    assert read_volume(tmp_path / "series" / "ct").shape == written.shape


def test_a_segmentation_of_dicom_channels_is_written_as_dicom_seg(cli, ct_series, tmp_path,
                                                                  old_checkpoints):
    channels = ["t1", "t1ce", "t2", "flair"]
    folders = [ct_series(tmp_path / name, slices=4) for name in reversed(channels)]
    result = cli("infer", *folders, "-o", tmp_path / "seg", "--format", "dicom", "--model",
                 old_checkpoints / OLD_SEG)
    assert result.code == 0, result.err
    assert "ordered as the model's channels (t1, t1ce, t2, flair)" in result.err
    seg = hd.seg.segread(next((tmp_path / "seg").iterdir()))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["NCR", "ED", "ET"]
    t1 = sorted((tmp_path / "t1").iterdir())
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in t1]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == headers[0].SeriesInstanceUID
    volume = read_channels([tmp_path / name for name in channels])
    labels = load_predictor(old_checkpoints / OLD_SEG).predict(volume).array[0]
    frames = seg.get_pixels_by_source_instance([h.SOPInstanceUID for h in headers],
                                               combine_segments=True, relabel=False)
    segment_of = np.zeros(5, dtype=np.uint8)
    segment_of[[1, 2, 4]] = [1, 2, 3]
    for k, frame in enumerate(frames):  # CT_small's slices run along +z, as the voxels do
        np.testing.assert_array_equal(frame, segment_of[labels[:, :, k].astype(int)].T)


@pytest.mark.parametrize(("output", "extra", "message"), [
    ("x.dcm", [], "a DICOM output is a series folder"),
    ("x", [], "no format in its name"),
    ("x.nii.gz", ["--format", "dicom"], "contradicts format dicom"),
    ("x", ["--format", "tiff"], "--format tiff: unknown; choose one of"),
    ("blocker/x", ["--format", "dicom"], "is not a folder"),
])
def test_output_formats_and_folders_are_checked_before_the_model_is_loaded(
        cli, tmp_path, output, extra, message):
    source = write_volume(Volume(np.zeros((1, 4, 4, 4), np.float32), make_affine((1, 1, 1))),
                          tmp_path / "a.nii.gz")
    (tmp_path / "blocker").write_text("a file")
    result = cli("infer", source, "-o", tmp_path / output, *extra, "--model", tmp_path / "no.pt")
    assert result.code == 2 and len(error_lines(result)) == 1, result.err
    assert message in result.err and "no.pt" not in result.err


def test_a_dicom_seg_of_a_nifti_input_is_refused_before_reading(cli, tmp_path,
                                                                old_checkpoints):
    files = [write_volume(Volume(np.zeros((1, 8, 8, 8), np.float32), make_affine((1, 1, 1))),
                          tmp_path / f"{c}.nii.gz") for c in ("t1", "t1ce", "t2", "flair")]
    result = cli("infer", *files, "-o", tmp_path / "seg", "--format", "dicom", "--model",
                 old_checkpoints / OLD_SEG, "--quiet")
    assert result.code == 2 and "is not DICOM" in result.err and "infer" not in result.err
    assert not (tmp_path / "seg").exists()


def test_a_result_of_several_channels_is_not_written_as_a_dicom_series(cli, two_channel_model,
                                                                       ct_series, tmp_path):
    folders = [ct_series(tmp_path / name, slices=3) for name in ("t1", "t2")]
    result = cli("infer", *folders, "-o", tmp_path / "out", "--format", "dicom", "--model",
                 two_channel_model, "--quiet")
    assert result.code == 2 and len(error_lines(result)) == 1
    assert "--format dicom: a DICOM series holds one channel" in result.err
    assert "infer" not in result.err and not (tmp_path / "out").exists()


def test_an_output_never_replaces_an_input(cli, sr_model, ct_series, tmp_path):
    volume = Volume(np.random.default_rng(0).uniform(-900, 300, (1, 6, 6, 4)).astype(np.float32),
                    make_affine((1, 1, 2)))
    (tmp_path / "in").mkdir()
    source = write_volume(volume, tmp_path / "in" / "a.nii.gz")
    os.symlink(source, tmp_path / "link.nii.gz")
    os.link(source, tmp_path / "hard.nii.gz")
    series = ct_series(tmp_path / "ct")
    before = source.read_bytes(), sorted(p.read_bytes() for p in series.iterdir())
    runs = [
        (source, source, []),  # the input itself
        (source, tmp_path / "link.nii.gz", []),  # through a symbolic link
        (tmp_path / "link.nii.gz", source, []),
        (source, tmp_path / "hard.nii.gz", []),  # a hard link
        (series, series, ["--format", "dicom"]),  # a DICOM folder
        (series, tmp_path, ["--format", "dicom"]),  # a folder that holds the input
        (tmp_path / "in", tmp_path / "in", []),  # a batch whose outputs land on its inputs
    ]
    for given, output, extra in runs:
        result = cli("infer", given, "-o", output, *extra, "--model", sr_model, "--overwrite")
        assert result.code == 2, (given, output, result.err)
        assert ("is also an input" in result.err or "holds the input" in result.err
                or "is inside INPUT" in result.err), result.err
        assert "model:" not in result.err  # refused before the model is loaded
    assert (source.read_bytes(), sorted(p.read_bytes() for p in series.iterdir())) == before


def test_broken_entries_of_a_batch_are_failed_cases(cli, sr_model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_volume(Volume(np.zeros((1, 6, 6, 4), np.float32), make_affine((1, 1, 2))),
                 folder / "c1.nii.gz")
    os.symlink(tmp_path / "gone.nii.gz", folder / "c4.nii.gz")
    os.symlink(tmp_path / "gone", folder / "c6")
    (folder / "c5.nii.gz").mkdir()
    result = cli("infer", folder, "-o", tmp_path / "out", "--model", sr_model, "--quiet")
    assert result.code == 2
    lines = error_lines(result)
    assert len(lines) == 4 and "Traceback" not in result.err
    assert "c4.nii.gz: broken symbolic link" in lines[0]
    assert "c5.nii.gz: a folder named like a volume file" in lines[1]
    assert "c6: broken symbolic link" in lines[2]
    assert "3 of 4 case(s) failed" in lines[3]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["c1.nii.gz"]


@pytest.mark.parametrize("device", ["mps", "gpu", "cuda:x"])
def test_an_unusable_device_is_one_line_naming_the_choices(cli, sr_model, tmp_path, device):
    source = write_volume(Volume(np.zeros((1, 4, 4, 4), np.float32), make_affine((1, 1, 1))),
                          tmp_path / "a.nii.gz")
    result = cli("infer", source, "-o", tmp_path / "b.nii.gz", "--model", sr_model,
                 "--device", device)
    assert result.code == 2 and "Traceback" not in result.err
    assert error_lines(result) == [line for line in result.err.splitlines() if line][-1:]
    assert f"--device {device}:" in result.err
    assert "choose one of auto, cpu, cuda, cuda:N" in result.err


def test_channel_files_are_said_and_ordered_by_the_models_channel_names(
        cli, two_channel_model, tmp_path, monkeypatch):
    import revmed.inference.outputs

    files = [write_volume(Volume(np.full((1, 6, 6, 6), i, np.float32), make_affine((1, 1, 1))),
                          tmp_path / name) for i, name in enumerate(["s_T2.nii.gz", "s_t1.nii.gz"])]
    read = []
    monkeypatch.setattr(revmed.inference.outputs, "read_channels",
                        lambda paths: read.append(paths) or read_channels(paths))
    result = cli("infer", *files, "-o", tmp_path / "out.nii.gz", "--model", two_channel_model)
    assert result.code == 0, result.err
    assert "2 INPUT files are taken as the channels of one case, ordered as the model's " \
           "channels (t1, t2)" in result.err and "give the folder" in result.err
    assert read == [[files[1], files[0]]]
    other = [files[0].rename(tmp_path / "a.nii.gz"), files[1].rename(tmp_path / "b.nii.gz")]
    result = cli("infer", *other, "-o", tmp_path / "out2.nii.gz", "--model", two_channel_model)
    assert result.code == 0 and "in the order given" in result.err
    assert read[-1] == other


def test_quiet_silences_the_model_note(cli, sr_model, tmp_path):
    source = write_volume(Volume(np.zeros((1, 4, 4, 4), np.float32), make_affine((1, 1, 1))),
                          tmp_path / "a.nii.gz")
    loud = cli("infer", source, "-o", tmp_path / "b.nii.gz", "--model", sr_model)
    assert loud.code == 0 and f"model: {sr_model}" in loud.err
    quiet = cli("infer", source, "-o", tmp_path / "c.nii.gz", "--model", sr_model, "-q")
    assert quiet.code == 0 and quiet.err == ""


def test_integer_inputs_can_give_outputs_of_their_type(cli, sr_model, tmp_path,
                                                       old_checkpoints):
    values = np.random.default_rng(3).integers(-1000, 1500, (6, 6, 4)).astype(np.int16)
    source = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(values, np.diag([1.0, 1.0, 2.0, 1.0])), source)
    as_float = cli("infer", source, "-o", tmp_path / "f.nii.gz", "--model", sr_model, "-q")
    as_input = cli("infer", source, "-o", tmp_path / "i.nii.gz", "--model", sr_model, "-q",
                   "--dtype", "input")
    assert as_float.code == as_input.code == 0, as_input.err
    assert nib.load(tmp_path / "f.nii.gz").get_data_dtype() == np.float32
    assert nib.load(tmp_path / "i.nii.gz").get_data_dtype() == np.int16
    np.testing.assert_array_equal(read_volume(tmp_path / "i.nii.gz").array,
                                  np.rint(read_volume(tmp_path / "f.nii.gz").array))
    floats = write_volume(read_volume(source), tmp_path / "float.nii.gz")  # stored as float32
    said = cli("infer", floats, "-o", tmp_path / "g.nii.gz", "--model", sr_model, "--dtype",
               "input")
    assert said.code == 0 and "written as float32" in said.err
    assert nib.load(tmp_path / "g.nii.gz").get_data_dtype() == np.float32
    refused = cli("infer", source, "-o", tmp_path / "s.nii.gz", "--model",
                  old_checkpoints / OLD_SEG, "--dtype", "input")
    assert refused.code == 2 and "label maps" in refused.err
