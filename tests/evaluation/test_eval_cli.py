"""`revmed eval` end to end on tiny volumes written to disk."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from revmed.transforms import downsample

SPACING = (1.0, 1.0, 2.0)


def _json(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


def _one_red_line(result, *needles):
    assert result.code == 2, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert lines and lines[0].startswith("error:") and "Traceback" not in result.err
    text = " ".join(result.err.split())
    for needle in needles:
        assert str(needle) in text, (needle, result.err)


@pytest.fixture
def pair(write, smooth):
    """One case where the prediction is the reference + 10 HU everywhere."""
    ref = smooth((16, 16, 16))
    return (write("pred.nii.gz", ref + 10.0, SPACING), write("ref.nrrd", ref, SPACING), ref)


@pytest.fixture
def folders(write, smooth, tmp_path):
    """Two cases in folders, with masks and 2x2x2 low-resolution inputs."""
    for i in range(2):
        ref = smooth((16, 16, 16), seed=i)
        write(f"ref/case_{i:03d}.nii.gz", ref, SPACING)
        write(f"pred/case_{i:03d}.nrrd", ref + (10.0 if i == 0 else -20.0), SPACING)
        mask = np.zeros((16, 16, 16), dtype=np.float32)
        mask[3:12, 3:12, 3:12] = 1  # a 9-cube: its 5x5x5 interior is 5^3 voxels
        write(f"masks/case_{i:03d}.nii.gz", mask, SPACING)
        write(f"lr/case_{i:03d}.nii.gz", downsample(ref, (2, 2, 2)),
              tuple(2 * s for s in SPACING))
    return tmp_path


def test_plus_10_hu_gives_mae_rmse_10_and_psnr_from_the_range(cli, pair):
    pred, ref, array = pair
    report = _json(cli("eval", pred, ref, "--data-range", "1500", "--json", "-"))
    case = report["cases"][0]
    assert case["case"] == "ref" and report["methods"] == ["prediction"]
    m = case["prediction"]
    assert m["mae"] == pytest.approx(10, rel=1e-5) and m["rmse"] == pytest.approx(10, rel=1e-5)
    assert m["psnr"] == pytest.approx(20 * math.log10(1500 / 10), rel=1e-5)
    assert 0.9 < m["ssim"] < 1.0
    assert report["data_range"] == 1500 and case["data_range"] == 1500
    assert report["summary"]["prediction"]["mae"] == {"mean": pytest.approx(10, rel=1e-5),
                                                      "std": 0.0, "n": 1}
    # default data range: the reference's max - min, reported
    default = _json(cli("eval", pred, ref, "--json", "-"))
    span = float(array.max() - array.min())
    assert default["data_range"] is None
    assert default["cases"][0]["data_range"] == pytest.approx(span, rel=1e-6)
    assert default["cases"][0]["prediction"]["psnr"] == pytest.approx(
        20 * math.log10(span / 10), rel=1e-5)


def test_identical_volumes_give_infinite_psnr_as_null(cli, pair):
    _, ref, _ = pair
    result = cli("eval", ref, ref, "--json", "-")
    m = _json(result)["cases"][0]["prediction"]
    assert m["psnr"] is None and m["mae"] == 0 and m["ssim"] == pytest.approx(1.0)
    assert "Infinity" not in result.out and "NaN" not in result.out


def test_table_on_stdout_with_mean_and_std_rows(cli, pair):
    pred, ref, _ = pair
    result = cli("eval", pred, ref, "--data-range", "1500", "--quiet")
    assert result.code == 0 and result.err == ""
    for word in ("ref", "prediction", "mae", "psnr", "ssim", "mean of 1", "std", "1500",
                 "10.00", "43.52"):
        assert word in result.out


def test_folders_matched_by_case_name_with_mask_and_baselines(cli, folders):
    d = folders
    report = _json(cli("eval", d / "pred", d / "ref", "--mask", d / "masks", "--input", d / "lr",
                       "--baseline", "trilinear", "--baseline", "tricubic", "--data-range",
                       "1000", "--json", "-"))
    assert [c["case"] for c in report["cases"]] == ["case_000", "case_001"]
    assert report["methods"] == ["prediction", "trilinear", "tricubic"]
    first, second = report["cases"]
    assert first["files"]["prediction"].endswith("case_000.nrrd")
    assert first["mask_voxels"] == 9**3 and first["interior_voxels"] == 5**3
    for key in ("mae", "rmse", "mae_mask", "rmse_mask", "rmse_interior"):
        assert first["prediction"][key] == pytest.approx(10, rel=1e-5)
        assert second["prediction"][key] == pytest.approx(20, rel=1e-5)
    for case in report["cases"]:
        tri, cub = case["trilinear"], case["tricubic"]
        assert tri["rmse"] != cub["rmse"] and tri["rmse"] != case["prediction"]["rmse"]
        assert cub["rmse"] < tri["rmse"] and cub["ssim"] > tri["ssim"]  # smooth volumes
    summary = report["summary"]["prediction"]["rmse"]
    assert summary["mean"] == pytest.approx(15, rel=1e-5)
    assert summary["std"] == pytest.approx(5, rel=1e-4) and summary["n"] == 2


def test_csv_json_and_png_files(cli, folders):
    d = folders
    result = cli("eval", d / "pred", d / "ref", "--input", d / "lr", "--baseline", "trilinear",
                 "--csv", d / "out.csv", "--json-out", d / "out.json", "--png", d / "previews",
                 "--quiet")
    assert result.code == 0, result.err
    with open(d / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["method"]) for r in rows] == [
        ("case_000", "prediction"), ("case_000", "trilinear"),
        ("case_001", "prediction"), ("case_001", "trilinear")]
    assert float(rows[0]["mae"]) == pytest.approx(10, rel=1e-5)
    assert set(rows[0]) == {"case", "method", "data_range", "mae", "rmse", "psnr", "ssim"}
    report = json.loads((d / "out.json").read_text())
    pngs = sorted((d / "previews").iterdir())
    assert [p.name for p in pngs] == ["case_000.png", "case_001.png"]
    assert report["cases"][0]["preview"] == str(pngs[0])
    for path in pngs:
        assert str(path) in result.out
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)  # (rows, columns)
        assert image.GetDimension() == 2 and array.dtype == np.uint8
        assert image.GetNumberOfComponentsPerPixel() == 1
        # four rows (input, prediction, reference, |error|) of three slices: taller than wide
        assert array.shape[0] > array.shape[1] >= 3 * 16 and array.max() > 0


def test_png_of_one_case_is_a_file_with_three_rows(cli, pair, tmp_path):
    pred, ref, _ = pair
    target = tmp_path / "preview.png"
    result = cli("eval", pred, ref, "--png", target, "--quiet")
    assert result.code == 0, result.err and str(target) in result.out
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(target)))
    # three rows of tiles: the k plane is 16x16, the two others 16 wide and 16 * 2 tall
    # (2 mm slices repeated twice), all enlarged 4x to reach 128 pixels
    assert array.shape == (3 * 128 + 2 * 2, 3 * 64 + 2 * 2)
    # an existing folder receives <case>.png
    folder = tmp_path / "pngs"
    folder.mkdir()
    assert cli("eval", pred, ref, "--png", folder, "--quiet").code == 0
    assert (folder / "ref.png").is_file()


def test_shape_mismatch_names_both_files(cli, write, smooth):
    pred = write("a/pred.nii.gz", smooth((16, 16, 14)))
    ref = write("b/ref.nii.gz", smooth((16, 16, 16)))
    _one_red_line(cli("eval", pred, ref), pred, ref, "16x16x14", "16x16x16")


def test_spacing_mismatch_is_an_error(cli, write, smooth):
    pred = write("pred.nii.gz", smooth(), (1.0, 1.0, 1.0))
    ref = write("ref.nii.gz", smooth(), (1.0, 1.0, 1.5))
    _one_red_line(cli("eval", pred, ref), pred, ref, "spacing")


def test_missing_partners_are_listed(cli, write, smooth, tmp_path):
    for name in ("case_000", "case_001"):
        write(f"pred/{name}.nii.gz", smooth())
    for name in ("case_000", "case_002"):
        write(f"ref/{name}.nii.gz", smooth())
    result = cli("eval", tmp_path / "pred", tmp_path / "ref", "--json-out", tmp_path / "r.json")
    _one_red_line(result, "case_001", "case_002", "no reference", "no prediction")
    assert not (tmp_path / "r.json").exists()


def test_missing_mask_or_input_case_is_an_error(cli, folders):
    d = folders
    (d / "masks" / "case_001.nii.gz").unlink()
    _one_red_line(cli("eval", d / "pred", d / "ref", "--mask", d / "masks"),
                  "case_001", "--mask")


def test_unwritable_outputs_fail_before_any_work(cli, folders):
    d = folders
    _one_red_line(cli("eval", d / "pred", d / "ref", "--json-out", d / "nowhere" / "r.json"),
                  "nowhere", "does not exist")
    _one_red_line(cli("eval", d / "pred", d / "ref", "--csv", "-"), "--csv -")
    (d / "taken.png").write_bytes(b"")
    _one_red_line(cli("eval", d / "pred", d / "ref", "--png", d / "taken.png"),
                  "taken.png", "folder")


def test_file_against_folder_is_an_error(cli, folders):
    d = folders
    _one_red_line(cli("eval", d / "pred" / "case_000.nrrd", d / "ref"), "two volumes")


def test_a_bad_case_writes_nothing(cli, folders, write, smooth):
    d = folders
    write("pred/case_001.nrrd", smooth((16, 16, 12)), SPACING)  # the second case is broken
    result = cli("eval", d / "pred", d / "ref", "--json-out", d / "r.json", "--csv", d / "r.csv",
                 "--png", d / "png", "--quiet")
    _one_red_line(result, "case_001")
    assert not (d / "r.json").exists() and not (d / "r.csv").exists()
    assert not (d / "png").exists()


def test_baseline_needs_input_and_integer_factors(cli, folders, write, smooth):
    d = folders
    _one_red_line(cli("eval", d / "pred", d / "ref", "--baseline", "trilinear"), "--input")
    _one_red_line(cli("eval", d / "pred", d / "ref", "--input", d / "lr", "--baseline",
                      "cubic"), "cubic")
    for i in range(2):  # inputs on a 1.5x coarser grid: not an integer refinement
        write(f"lr15/case_{i:03d}.nii.gz", smooth((11, 11, 11)), (1.5, 1.5, 3.0))
    _one_red_line(cli("eval", d / "pred", d / "ref", "--input", d / "lr15", "--baseline",
                      "trilinear"), "integer multiple")


def test_bad_data_range_and_constant_reference(cli, write, pair):
    pred, ref, _ = pair
    _one_red_line(cli("eval", pred, ref, "--data-range", "0"), "--data-range")
    flat = write("flat.nii.gz", np.full((16, 16, 16), 7.0), SPACING)
    _one_red_line(cli("eval", pred, flat), "flat.nii.gz", "--data-range")


def test_progress_on_stderr_unless_quiet_or_json_stdout(cli, folders):
    d = folders
    shown = cli("eval", d / "pred", d / "ref")
    assert shown.code == 0 and "eval" in shown.err
    assert cli("eval", d / "pred", d / "ref", "--quiet").err == ""
    alone = cli("eval", d / "pred", d / "ref", "--json", "-")
    assert alone.err == "" and json.loads(alone.out)["cases"]


def test_a_thin_mask_has_no_interior(cli, write, pair):
    pred, ref, _ = pair
    mask = np.zeros((16, 16, 16), dtype=np.float32)
    mask[4:12, 4:12, 6:9] = 1  # 3 voxels thick: no voxel has a 5x5x5 neighbourhood inside
    path = write("thin.nii.gz", mask, SPACING)
    report = _json(cli("eval", pred, ref, "--mask", path, "--json", "-"))
    case = report["cases"][0]
    assert case["interior_voxels"] == 0 and case["prediction"]["rmse_interior"] is None
    assert case["prediction"]["rmse_mask"] == pytest.approx(10, rel=1e-5)
    assert report["summary"]["prediction"]["rmse_interior"]["n"] == 0
    table = cli("eval", pred, ref, "--mask", path, "--quiet")
    assert table.code == 0 and "interior" in table.out
