"""`revmed info` and `revmed synth` from the command line."""

from __future__ import annotations

import json

import numpy as np

from revmed.io import Volume, make_affine, write_volume


def test_info_reports_geometry_as_json(cli, tmp_path):
    rotation = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    affine = make_affine([0.7, 0.8, 2.5], rotation, [-10.0, 20.0, 5.5])
    array = np.linspace(-1000, 400, 6 * 5 * 4, dtype=np.float32).reshape(1, 6, 5, 4)
    path = write_volume(Volume(array, affine), tmp_path / "scan.nii.gz")
    result = cli("info", path, "--json")
    assert result.code == 0, result.err
    (row,) = json.loads(result.out)
    assert row["shape"] == [6, 5, 4] and row["channels"] == 1
    np.testing.assert_allclose(row["spacing_mm"], [0.7, 0.8, 2.5], atol=1e-5)
    np.testing.assert_allclose(row["origin_mm_ras"], [-10.0, 20.0, 5.5], atol=1e-5)
    np.testing.assert_allclose(row["direction_ras"], rotation, atol=1e-5)
    assert row["min"] == -1000 and row["max"] == 400 and row["nonfinite_voxels"] == 0


def test_info_on_a_missing_file_is_one_line_exit_2(cli, tmp_path):
    result = cli("info", tmp_path / "absent.nii.gz")
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and "absent.nii.gz" in result.err


def test_synth_json_summary_and_refusal_to_overwrite(cli, tmp_path):
    out = tmp_path / "brats"
    result = cli("synth", "brats-seg", out, "--cases", "3", "--shape", "24,24,24", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["kind"] == "segmentation" and summary["channels"] == ["t1", "t1ce", "t2",
                                                                          "flair"]
    assert sum(summary["cases"].values()) == 3
    again = cli("synth", "brats-seg", out, "--cases", "3", "--shape", "24,24,24")
    assert again.code == 2 and str(out) in again.err
    assert cli("synth", "brats-seg", out, "--cases", "3", "--shape", "24,24,24",
               "--overwrite", "--quiet").code == 0


def test_synth_rejects_unknown_task_and_bad_shape(cli, tmp_path):
    assert cli("synth", "mri-magic", tmp_path / "x").code == 2
    bad = cli("synth", "chestct-sr", tmp_path / "y", "--shape", "12,12")
    assert bad.code == 2 and "--shape" in bad.err and not (tmp_path / "y").exists()


def test_progress_goes_to_stderr_and_quiet_silences_it(cli, tmp_path):
    loud = cli("synth", "chestct-da", tmp_path / "a", "--cases", "2", "--shape", "16,16,16")
    assert loud.code == 0 and "synth chestct-da" in loud.err and "━" in loud.err
    assert "━" not in loud.out
    quiet = cli("synth", "chestct-da", tmp_path / "b", "--cases", "2", "--shape", "16,16,16",
                "--quiet")
    assert quiet.code == 0 and quiet.err == ""


def test_missing_data_folder_says_how_to_get_data(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preset's default data_dir is relative: data/chestct-sr
    result = cli("train", "--preset", "chestct-sr")
    assert result.code == 2
    assert "data/chestct-sr" in result.err and "revmed synth chestct-sr" in result.err
    assert not (tmp_path / "runs").exists()
    patch = cli("patchify", "data/hcp-sr", "out", "--preset", "hcp-sr")
    assert patch.code == 2 and "revmed synth hcp-sr data/hcp-sr" in patch.err
