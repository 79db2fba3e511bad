"""`revmed selfsr` on tiny NIfTI scans: geometry, value range, determinism, the kept model,
folders, and one error line for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from revmed.checkpoint import load_checkpoint
from revmed.inference import Translator
from revmed.io import Volume, make_affine, read_volume, write_volume, zoom_affine
from revmed.transforms import upsample

FAST = ["--steps", "3", "--set", "patch.size=[1,8,16]", "--quiet"]


def _scan(path, shape=(24, 20, 6), spacing=(1.0, 1.0, 4.0), seed=0, spike=True):
    """A blob in noise, rotated and shifted in space, with one very bright voxel."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    blob = 400 * np.exp(-((i - 11) ** 2 + (j - 9) ** 2 + (4 * (k - 2.5)) ** 2) / 50.0)
    array = (blob + rng.normal(0, 10, shape)).astype(np.float32)
    if spike:
        array[3, 4, 2] = 30000.0  # far outside any window from the percentiles
    theta = 0.3
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                          [0, 0, 1]])
    affine = make_affine(spacing, direction, origin=(-10.0, 5.0, 30.0))
    write_volume(Volume(array[None], affine), path)
    return read_volume(path)


def test_nifti_geometry_values_and_kept_model(cli, tmp_path):
    scan = _scan(tmp_path / "thick.nii.gz")
    result = cli("selfsr", tmp_path / "thick.nii.gz", "-o", tmp_path / "iso.nii.gz",
                 "--keep-model", "--orientations", "1", *FAST)
    assert result.code == 0, result.err
    assert result.err == ""  # --quiet
    out = read_volume(tmp_path / "iso.nii.gz")
    assert out.shape == (24, 20, 24)
    assert np.allclose(out.affine, zoom_affine(scan.affine, [1, 1, 4]))  # extent, direction
    assert np.allclose(out.spacing, [1, 1, 1])
    model = tmp_path / "iso.selfsr.pt"
    assert f"wrote {model}" in result.out
    checkpoint = load_checkpoint(model)
    card = checkpoint.card
    assert card.task == "sr" and tuple(card.data.sr_factors) == (1, 1, 4)
    # statistics measured after training: inference runs in slabs along i, each alone
    assert set(checkpoint.state["norm_statistics"]) == {"forward", "reverse"}
    assert set(Translator.load(model).tiled) == {False, True}
    assert tuple(card.patch_size) == (1, 8, 16)  # thin across the slices: i
    lo, hi = card.data.window
    assert lo < 0 < 300 < hi < 30000  # the 0.1 and 99.9th percentiles, widened
    # what the network cannot see passes through: the interpolated scan, exactly
    interpolated = upsample(scan.array, (1, 1, 4), "bspline")
    outside = (interpolated < lo) | (interpolated > hi)
    assert outside.sum() >= 4
    assert np.array_equal(out.array[outside], interpolated[outside])
    assert out.array.max() == pytest.approx(interpolated.max()) and out.array.max() > 20000
    inside = ~outside
    assert np.all(out.array[inside] >= lo - 1e-3) and np.all(out.array[inside] <= hi + 1e-3)
    # the kept model runs in revmed infer without retraining, to the same volume
    again = cli("infer", tmp_path / "thick.nii.gz", "-o", tmp_path / "infer.nii.gz", "--model",
                model, "-q")
    assert again.code == 0, again.err
    assert np.allclose(read_volume(tmp_path / "infer.nii.gz").array, out.array, atol=1e-4)
    # by default the output is averaged with the network run on the i-j swapped scan (the
    # same seed trains the same model)
    result = cli("selfsr", tmp_path / "thick.nii.gz", "-o", tmp_path / "avg.nii.gz", *FAST)
    assert result.code == 0, result.err
    swapped = scan.with_array(np.ascontiguousarray(scan.array.transpose(0, 2, 1, 3)))
    other = Translator.load(model).translate(swapped).array.transpose(0, 2, 1, 3)
    averaged = read_volume(tmp_path / "avg.nii.gz").array
    assert np.allclose(averaged, (out.array + other) / 2, atol=1e-4)
    assert not np.allclose(averaged, out.array, atol=1e-3)


def test_same_seed_same_output(cli, tmp_path):
    _scan(tmp_path / "thick.nii.gz")
    arrays = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        result = cli("selfsr", tmp_path / "thick.nii.gz", "-o", tmp_path / f"{name}.nii.gz",
                     "--seed", str(seed), *FAST)
        assert result.code == 0, result.err
        arrays[name] = read_volume(tmp_path / f"{name}.nii.gz").array
    assert np.array_equal(arrays["a"], arrays["b"])
    assert not np.array_equal(arrays["a"], arrays["c"])


def test_progress_explains_the_plan_and_shows_loss(cli, tmp_path):
    _scan(tmp_path / "thick.nii.gz")
    result = cli("selfsr", tmp_path / "thick.nii.gz", "-o", tmp_path / "iso.nii.gz",
                 "--steps", "2", "--set", "patch.size=[1,8,16]")
    assert result.code == 0, result.err
    assert ("through-plane axis k (4 mm slices, 1x1 mm in-plane), found from the spacing: "
            "refining 4x to 24x20x24 voxels of 1 mm along k") in result.err
    assert "loss" in result.err and "ETA" in result.err and "trained 2 step(s)" in result.err


def test_fractional_factor_and_given_axis(cli, tmp_path):
    scan = _scan(tmp_path / "thick.nii.gz", spacing=(1.0, 1.0, 3.5), spike=False)
    result = cli("selfsr", tmp_path / "thick.nii.gz", "-o", tmp_path / "iso.nii.gz", *FAST)
    assert result.code == 0, result.err
    out = read_volume(tmp_path / "iso.nii.gz")
    assert out.shape == (24, 20, 21)  # round(6 * 3.5); the network works at 4x
    assert np.allclose(out.affine, zoom_affine(scan.affine, [1, 1, 21 / 6]))
    result = cli("selfsr", tmp_path / "thick.nii.gz", "-o", tmp_path / "two.nii.gz",
                 "--factor", "2", "--axis", "k", *FAST)
    assert result.code == 0, result.err
    assert read_volume(tmp_path / "two.nii.gz").shape == (24, 20, 12)


def test_folder_reports_a_bad_scan_and_does_the_others(cli, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    _scan(folder / "a.nii.gz")
    _scan(folder / "b.nii.gz", spacing=(1.0, 1.0, 1.0))  # isotropic: nothing to refine
    result = cli("selfsr", folder, "-o", tmp_path / "out", *FAST)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("error: ") and "b.nii.gz" in lines[0] and "isotropic" in lines[0]
    assert "1 of 2 scan(s) failed" in lines[-1]
    assert (tmp_path / "out" / "a.nii.gz").is_file()
    assert not (tmp_path / "out" / "b.nii.gz").exists()
    # a second run with --skip-existing leaves a alone
    before = (tmp_path / "out" / "a.nii.gz").stat().st_mtime_ns
    again = cli("selfsr", folder, "-o", tmp_path / "out", "--skip-existing", *FAST)
    assert again.code == 2 and (tmp_path / "out" / "a.nii.gz").stat().st_mtime_ns == before


def test_shared_model_for_a_folder(cli, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    _scan(folder / "a.nii.gz", seed=1)
    _scan(folder / "b.nii.gz", seed=2, shape=(20, 24, 5))
    result = cli("selfsr", folder, "-o", tmp_path / "out", "--shared", "--keep-model", *FAST)
    assert result.code == 0, result.err
    assert read_volume(tmp_path / "out" / "a.nii.gz").shape == (24, 20, 24)
    assert read_volume(tmp_path / "out" / "b.nii.gz").shape == (20, 24, 20)
    card = load_checkpoint(tmp_path / "out" / "selfsr-shared.pt").card
    assert tuple(card.data.sr_factors) == (1, 1, 4)


@pytest.mark.parametrize(("args", "words"), [
    (["--factor", "abc"], "--factor abc: give auto or a number"),
    (["--axis", "z"], "--axis z: choose auto, i, j or k"),
    (["--slice-profile", "sinc"], "--slice-profile sinc: choose box or gaussian"),
    (["--preset", "demo-seg"], "selfsr trains a residual RevGAN"),
    (["--shared"], "--shared trains one model for a folder"),
])
def test_bad_options_fail_before_any_work(cli, tmp_path, args, words):
    _scan(tmp_path / "thick.nii.gz")
    result = cli("selfsr", tmp_path / "thick.nii.gz", "-o", tmp_path / "iso.nii.gz", *args,
                 *FAST)
    assert result.code == 2
    assert result.err.count("\n") == 1 and result.err.startswith("error: ")
    assert words in result.err
    assert not (tmp_path / "iso.nii.gz").exists()


def test_bad_scans_and_outputs_are_one_line(cli, tmp_path):
    _scan(tmp_path / "iso_scan.nii.gz", spacing=(1.0, 1.0, 1.0))
    result = cli("selfsr", tmp_path / "iso_scan.nii.gz", "-o", tmp_path / "o.nii.gz", *FAST)
    assert result.code == 2 and result.err.count("\n") == 1
    assert "close to isotropic" in result.err and "--factor" in result.err
    assert list(tmp_path.iterdir()) == [tmp_path / "iso_scan.nii.gz"]
    _scan(tmp_path / "thick.nii.gz")
    (tmp_path / "o.selfsr.pt").write_bytes(b"old")
    result = cli("selfsr", tmp_path / "thick.nii.gz", "-o", tmp_path / "o.nii.gz",
                 "--keep-model", *FAST)
    assert result.code == 2 and "o.selfsr.pt: exists" in result.err
    assert not (tmp_path / "o.nii.gz").exists()
    result = cli("selfsr", tmp_path / "missing.nii.gz", "-o", tmp_path / "o.nii.gz", *FAST)
    assert result.code == 2 and result.err.count("\n") == 1 and "missing.nii.gz" in result.err
