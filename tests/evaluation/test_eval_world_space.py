"""`revmed eval` compares volumes where they are in space, not where their voxels are stored:
another voxel order is reordered exactly, another grid is refused (or resampled when asked)."""

from __future__ import annotations

import json

import numpy as np

from revmed.io import Volume, make_affine, write_volume
from revmed.io.grids import on_grid_of, reoriented_like

SPACING = (1.0, 1.2, 1.5)


def _volume(array: np.ndarray, spacing=SPACING, origin=(10.0, -20.0, 30.0)) -> Volume:
    return Volume(np.asarray(array, np.float32), make_affine(spacing, origin=origin))


def _las(volume: Volume) -> Volume:
    """The same image stored with its first axis reversed and its axes in the order k, i, j
    (a LAS-like file of a RAS image): every voxel at the same point in space."""
    flipped = Volume(volume.array[:, ::-1].copy(), volume.affine @ np.array(
        [[-1, 0, 0, volume.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    permute = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    return Volume(np.transpose(flipped.array, (0, 3, 1, 2)).copy(), flipped.affine @ permute)


def _centres(volume: Volume) -> np.ndarray:
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in volume.shape), indexing="ij"), -1)
    return idx @ volume.affine[:3, :3].T + volume.affine[:3, 3]


def test_another_voxel_order_is_the_same_image(smooth):
    ref = _volume(smooth((12, 10, 8)))
    las = _las(ref)
    assert las.array.shape != ref.array.shape  # stored differently ...
    back = on_grid_of(las, ref, "prediction")
    np.testing.assert_array_equal(back.array, ref.array)  # ... and exactly the same image
    np.testing.assert_allclose(_centres(back), _centres(ref), atol=1e-9)
    assert reoriented_like(ref, ref) is ref


def test_eval_scores_an_image_in_another_voxel_order_as_itself(cli, smooth, tmp_path):
    ref = _volume(smooth((12, 10, 8)))
    pred = ref.with_array(ref.array + 5.0)
    write_volume(ref, tmp_path / "ref.nii.gz")
    write_volume(pred, tmp_path / "ras.nii.gz")
    write_volume(_las(pred), tmp_path / "las.nii.gz")
    scores = [json.loads(cli("eval", tmp_path / name, tmp_path / "ref.nii.gz", "--json").out)
              ["cases"][0]["prediction"] for name in ("ras.nii.gz", "las.nii.gz")]
    assert abs(scores[1]["mae"] - 5.0) < 1e-5
    assert scores[0] == scores[1]


def test_a_shifted_prediction_is_refused_not_scored_perfect(cli, smooth, tmp_path):
    ref = _volume(smooth((12, 10, 8)))
    write_volume(ref, tmp_path / "ref.nii.gz")
    shifted = Volume(ref.array, ref.affine.copy())
    shifted.affine[0, 3] += 100.0
    write_volume(shifted, tmp_path / "shifted.nii.gz")
    result = cli("eval", tmp_path / "shifted.nii.gz", tmp_path / "ref.nii.gz")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "shifted by 100 mm" in result.err and "--resample" in result.err
    outside = cli("eval", tmp_path / "shifted.nii.gz", tmp_path / "ref.nii.gz", "--resample")
    assert outside.code == 2 and "covers only 0.0%" in outside.err


def test_resample_puts_a_finer_prediction_on_the_reference_grid(cli, tmp_path):
    """A linear ramp sampled on a grid twice as fine over the same extent: linear resampling
    gives back the ramp on the reference's grid, so the error is ~0."""
    coarse_spacing, fine_spacing = np.array(SPACING), np.array(SPACING) / 2
    ref = _volume(np.zeros((1, 10, 10, 8)))
    ref.array[0] = _centres(ref) @ np.array([1.0, 2.0, 3.0])
    fine_origin = ref.origin - (coarse_spacing - fine_spacing) / 2  # same outer faces
    fine = _volume(np.zeros((1, 20, 20, 16)), spacing=fine_spacing, origin=fine_origin)
    fine.array[0] = _centres(fine) @ np.array([1.0, 2.0, 3.0])
    write_volume(ref, tmp_path / "ref.nii.gz")
    write_volume(fine, tmp_path / "fine.nii.gz")
    refused = cli("eval", tmp_path / "fine.nii.gz", tmp_path / "ref.nii.gz")
    assert refused.code == 2 and "shape 20x20x16 against 10x10x8" in refused.err
    result = cli("eval", tmp_path / "fine.nii.gz", tmp_path / "ref.nii.gz", "--resample",
                 "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["cases"][0]["prediction"]["mae"] < 1e-3


def test_label_maps_and_masks_in_another_voxel_order(cli, tmp_path):
    labels = np.zeros((1, 12, 10, 8), np.float32)
    labels[0, 3:8, 2:6, 2:5] = 2
    labels[0, 4:6, 3:5, 3:4] = 4
    ref = _volume(labels)
    write_volume(ref, tmp_path / "ref.nii.gz", dtype=np.uint8)
    write_volume(_las(ref), tmp_path / "las.nii.gz", dtype=np.uint8)
    result = cli("eval", tmp_path / "las.nii.gz", tmp_path / "ref.nii.gz", "--regions", "brats",
                 "--json")
    assert result.code == 0, result.err
    case = json.loads(result.out)["cases"][0]
    assert case["WT"]["dice"] == case["ET"]["dice"] == 1.0
    mask = ref.with_array((labels > 0).astype(np.float32))
    write_volume(_las(mask), tmp_path / "mask.nii.gz", dtype=np.uint8)
    masked = cli("eval", tmp_path / "ref.nii.gz", tmp_path / "ref.nii.gz", "--mask",
                 tmp_path / "mask.nii.gz", "--json")
    assert masked.code == 0, masked.err
    assert json.loads(masked.out)["cases"][0]["mask_voxels"] == int((labels > 0).sum())


def test_window_scores_the_papers_way(cli, tmp_path):
    """--window maps both volumes through the window to [-1, 1] (data range 2): bone above the
    window no longer counts against a prediction that is right inside it."""
    ref = _volume(np.full((1, 12, 10, 8), -400.0))
    ref.array[0, 4:8, 4:6, 3:5] = 900.0                  # bone, above the 350 HU window edge
    ref.array[0, 2, 2, 2] = -600.0
    pred = ref.with_array(np.clip(ref.array, -1150, 350))  # exact inside the window
    pred.array[0, 2, 2, 2] = -500.0                        # one error of 100 HU inside it
    write_volume(ref, tmp_path / "ref.nii.gz")
    write_volume(pred, tmp_path / "pred.nii.gz")
    hu = json.loads(cli("eval", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz",
                        "--data-range", "1500", "--json").out)
    paper = json.loads(cli("eval", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz",
                           "--window", "-1150,350", "--json").out)
    assert paper["window"] == [-1150.0, 350.0] and paper["data_range"] == 2.0
    assert "Gaussian window of 11" in paper["ssim"]
    windowed = paper["cases"][0]["prediction"]
    mse = (100 / 750) ** 2 / pred.array.size              # one voxel off by 100 HU = 0.133
    assert abs(windowed["psnr"] - 10 * np.log10(4 / mse)) < 1e-3
    assert abs(windowed["mae"] - (100 / 750) / pred.array.size) < 1e-7
    assert hu["cases"][0]["prediction"]["psnr"] < windowed["psnr"] - 10  # bone counted in HU
    both = cli("eval", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", "--window",
               "-1150,350", "--data-range", "1500")
    assert both.code == 2 and "--window" in both.err


def test_error_scale_reports_errors_in_other_units(cli, tmp_path):
    """--error-scale 100: MAE and RMSE (also inside the mask) times 100, PSNR and SSIM as they
    were; one voxel off by 0.02 in 1e-3 mm^2/s is an RMSE of 2 / sqrt(n) in 1e-5 mm^2/s."""
    ref = _volume(np.full((1, 10, 10, 10), 0.7))
    pred = ref.with_array(ref.array.copy())
    pred.array[0, 5, 5, 5] += 0.02
    mask = ref.with_array(np.ones_like(ref.array))
    for name, volume in (("ref", ref), ("pred", pred), ("mask", mask)):
        write_volume(volume, tmp_path / f"{name}.nii.gz")
    args = ("eval", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", "--mask",
            tmp_path / "mask.nii.gz", "--data-range", "3.5", "--json")
    plain = json.loads(cli(*args).out)["cases"][0]["prediction"]
    scaled_report = json.loads(cli(*args, "--error-scale", "100").out)
    scaled = scaled_report["cases"][0]["prediction"]
    assert scaled_report["error_scale"] == 100.0
    assert abs(scaled["rmse_mask"] - 2.0 / np.sqrt(1000)) < 1e-4
    for metric in ("mae", "rmse", "mae_mask", "rmse_mask"):
        assert abs(scaled[metric] - 100 * plain[metric]) < 1e-6 * max(1.0, scaled[metric])
    assert scaled["psnr"] == plain["psnr"] and scaled["ssim"] == plain["ssim"]
    assert cli(*args, "--error-scale", "0").code == 2
