"""revmed.metrics against values computed by hand on tiny hand-made arrays."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from revmed import metrics
from revmed.regions import BRATS

# --------------------------------------------------------------------------------------------
# MAE, RMSE, PSNR


def test_mae_rmse_by_hand():
    ref = np.zeros((1, 2, 2, 2), dtype=np.float32)
    pred = ref.copy()
    pred[0, 0] = 1.0  # four voxels off by +1
    pred[0, 1] = -3.0  # four voxels off by -3
    assert metrics.mae(pred, ref) == pytest.approx(2.0)
    assert metrics.rmse(pred, ref) == pytest.approx(math.sqrt((4 * 1 + 4 * 9) / 8))
    # (I, J, K) arrays work the same as one channel
    assert metrics.mae(pred[0], ref[0]) == pytest.approx(2.0)


def test_masked_errors_count_only_the_mask():
    ref = np.zeros((4, 4, 4))
    pred = ref.copy()
    pred[0] = 8.0  # the plane i = 0 is wrong
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[:2] = True  # 32 voxels, half of them wrong by 8
    assert metrics.mae(pred, ref, mask) == pytest.approx(4.0)
    assert metrics.rmse(pred, ref, mask) == pytest.approx(math.sqrt(64 / 2))
    mask[:] = False
    mask[2:] = True  # only correct voxels
    assert metrics.rmse(pred, ref, mask) == 0.0
    with pytest.raises(ValueError, match="no voxels"):
        metrics.rmse(pred, ref, np.zeros((4, 4, 4), dtype=bool))


def test_multichannel_rmse_pools_voxels_and_channels():
    """A 6-channel tensor volume: channel c is off by c inside the mask (and by 100 outside)."""
    ref = np.zeros((6, 5, 5, 5))
    pred = np.full_like(ref, 100.0)
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1:4, 1:4, 1:4] = True
    for c in range(6):
        pred[c][mask] = c
    expected = math.sqrt(sum(c * c for c in range(6)) / 6)
    assert metrics.rmse(pred, ref, mask) == pytest.approx(expected)
    assert metrics.rmse(pred, ref, mask[None]) == pytest.approx(expected)  # (1, I, J, K) mask
    assert metrics.mae(pred, ref, mask) == pytest.approx(15 / 6)


def test_psnr_from_its_formula():
    ref = np.random.default_rng(0).uniform(-1000, 400, (1, 6, 6, 6))
    pred = ref + 10.0
    assert metrics.psnr(pred, ref, 1500) == pytest.approx(20 * math.log10(1500 / 10))
    noisy = ref + np.random.default_rng(1).normal(0, 25, ref.shape)
    mse = float(np.mean((noisy - ref) ** 2))
    assert metrics.psnr(noisy, ref, 1500) == pytest.approx(10 * math.log10(1500**2 / mse))
    mask = np.zeros(ref.shape[1:], dtype=bool)
    mask[:3] = True
    mse_mask = float(np.mean((noisy - ref)[:, mask] ** 2))
    assert metrics.psnr(noisy, ref, 1500, mask) == pytest.approx(
        10 * math.log10(1500**2 / mse_mask))
    assert metrics.psnr(ref, ref, 1500) == math.inf
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="data_range"):
            metrics.psnr(pred, ref, bad)


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="same shape"):
        metrics.mae(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 5)))
    with pytest.raises(ValueError, match="mask"):
        metrics.rmse(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 4)), np.ones((4, 4, 3)))


# --------------------------------------------------------------------------------------------
# SSIM


def _ssim_numpy(x: np.ndarray, y: np.ndarray, data_range: float, windows=(11, 11, 11),
                sigma=1.5) -> float:
    """Wang et al.'s SSIM of two (I, J, K) arrays: separable Gaussian, valid positions only."""

    def gaussian(n):
        t = np.arange(n) - (n - 1) / 2
        g = np.exp(-(t**2) / (2 * sigma**2))
        return g / g.sum()

    def blur(a):
        for axis, n in enumerate(windows):
            a = np.lib.stride_tricks.sliding_window_view(a, n, axis=axis) @ gaussian(n)
        return a

    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_of_identical_volumes_is_one(smooth):
    ref = smooth((16, 16, 16))
    assert metrics.ssim3d(ref, ref, 1500) == pytest.approx(1.0, abs=1e-6)


def test_ssim_decreases_with_noise(smooth):
    ref = smooth((16, 16, 16))
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, ref.shape)
    values = [metrics.ssim3d(ref + s * noise, ref, 1500) for s in (5, 20, 80, 320)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[0] < 1.0 and values[-1] < 0.5


def test_ssim_matches_an_independent_numpy_implementation(smooth):
    ref = smooth((16, 17, 15), seed=2)[0]
    pred = ref + np.random.default_rng(3).normal(0, 40, ref.shape)
    low = float(ref.min())
    # revmed's default: both shifted by the reference's minimum
    expected = _ssim_numpy(pred - low, ref - low, 1500)
    assert metrics.ssim3d(pred, ref, 1500) == pytest.approx(expected, abs=1e-5)
    # low=0: the values as they are (MONAI's and scikit-image's convention)
    assert metrics.ssim3d(pred, ref, 1500, low=0) == pytest.approx(
        _ssim_numpy(pred, ref, 1500), abs=1e-5)


def test_ssim_averages_channels(smooth):
    a, b = smooth(seed=4)[0], smooth(seed=5)[0]
    noisy_a, noisy_b = a + 30.0 * np.sin(np.arange(a.size)).reshape(a.shape), b + 5.0
    both = metrics.ssim3d(np.stack([noisy_a, noisy_b]), np.stack([a, b]), 1000, low=0)
    alone = [metrics.ssim3d(noisy_a, a, 1000, low=0), metrics.ssim3d(noisy_b, b, 1000, low=0)]
    assert both == pytest.approx(np.mean(alone), abs=1e-6)


def test_ssim_window_shrinks_on_short_axes_and_refuses_tiny_volumes(smooth):
    assert metrics.ssim_window((32, 20, 11)) == (11, 11, 11)
    assert metrics.ssim_window((16, 8, 5)) == (11, 7, 5)
    ref = smooth((16, 16, 6))
    pred = ref + np.random.default_rng(0).normal(0, 40, ref.shape)
    assert metrics.ssim3d(pred, ref, 1500) == pytest.approx(
        _ssim_numpy(pred[0] - ref.min(), ref[0] - ref.min(), 1500, windows=(11, 11, 5)), abs=1e-5)
    with pytest.raises(ValueError, match="at least 3 voxels"):
        metrics.ssim3d(np.zeros((16, 16, 2)), np.zeros((16, 16, 2)), 1.0)


# --------------------------------------------------------------------------------------------
# Interior


def test_interior_of_a_9_cube_is_the_central_5_cube():
    mask = np.zeros((13, 13, 13), dtype=bool)
    mask[2:11, 2:11, 2:11] = True
    inner = metrics.interior(mask, 5)
    expected = np.zeros_like(mask)
    expected[4:9, 4:9, 4:9] = True
    assert inner.dtype == bool and np.array_equal(inner, expected)
    assert np.array_equal(metrics.interior(mask, 1), mask)
    three = metrics.interior(mask, 3)
    assert three.sum() == 7**3 and three[3:10, 3:10, 3:10].all()


def test_interior_treats_the_array_border_as_outside():
    mask = np.ones((9, 9, 9), dtype=bool)
    inner = metrics.interior(mask, 5)
    assert inner.sum() == 5**3 and inner[2:7, 2:7, 2:7].all()
    # a one-voxel hole removes the whole 5-cube around it
    mask = np.ones((13, 13, 13), dtype=bool)
    mask[6, 6, 6] = False
    inner = metrics.interior(mask, 5)
    assert inner.sum() == 9**3 - 5**3 and not inner[4:9, 4:9, 4:9].any()


def test_interior_size_must_be_odd():
    for bad in (0, 2, 4.5, -3):
        with pytest.raises(ValueError, match="odd"):
            metrics.interior(np.ones((5, 5, 5), dtype=bool), bad)


# --------------------------------------------------------------------------------------------
# Segmentation


def _cube(shape=(12, 12, 12), start=(2, 2, 2), size=4) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(s, s + size) for s in start)] = True
    return m


def test_dice_and_sensitivity_by_counting():
    a = _cube(start=(2, 2, 2))
    b = _cube(start=(3, 2, 2))  # shifted by one voxel: overlap 3 x 4 x 4 = 48 of 64 each
    assert metrics.dice(a, b) == pytest.approx(2 * 48 / 128)
    assert metrics.sensitivity(a, b) == pytest.approx(48 / 64)
    big = _cube(start=(2, 2, 2), size=6)  # 216 voxels containing a
    assert metrics.dice(a, big) == pytest.approx(2 * 64 / (64 + 216))
    assert metrics.sensitivity(a, big) == pytest.approx(64 / 216)
    assert metrics.sensitivity(big, a) == 1.0
    assert metrics.dice(a.astype(np.float32), a.astype(np.uint8)) == 1.0


def test_empty_mask_conventions():
    empty, cube = np.zeros((8, 8, 8), dtype=bool), _cube((8, 8, 8))
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.dice(cube, empty) == 0.0 and metrics.dice(empty, cube) == 0.0
    assert metrics.sensitivity(empty, empty) == 1.0
    assert metrics.sensitivity(cube, empty) == 1.0
    assert metrics.sensitivity(empty, cube) == 0.0
    assert metrics.hd95(empty, empty) == 0.0
    assert metrics.hd95(cube, empty) == math.inf and metrics.hd95(empty, cube) == math.inf


def test_hd95_of_shifted_planes_uses_the_spacing():
    """Two one-voxel-thick planes 3 voxels apart: every surface distance is 3 voxel steps."""
    spacing = (0.5, 1.25, 4.0)
    for axis in range(3):
        a, b = np.zeros((10, 10, 10), dtype=bool), np.zeros((10, 10, 10), dtype=bool)
        ia, ib = [slice(None)] * 3, [slice(None)] * 3
        ia[axis], ib[axis] = 2, 5
        a[tuple(ia)], b[tuple(ib)] = True, True
        assert metrics.hd95(a, b, spacing) == pytest.approx(3 * spacing[axis])
        assert metrics.hd95(b, a, spacing) == pytest.approx(3 * spacing[axis])


def test_hd95_of_single_voxels_is_their_distance():
    a, b = np.zeros((6, 6, 6), dtype=bool), np.zeros((6, 6, 6), dtype=bool)
    a[1, 1, 1], b[3, 2, 1] = True, True
    assert metrics.hd95(a, b, (0.5, 2.0, 3.0)) == pytest.approx(math.sqrt(1.0**2 + 2.0**2))
    assert metrics.hd95(a, a, (0.5, 2.0, 3.0)) == 0.0


def _hd95_brute_force(a, b, spacing):
    """Surface voxels by counting face neighbours, all pairwise distances, numpy percentile."""
    def surface(m):
        p = np.pad(m, 1)
        inner = p[1:-1, 1:-1, 1:-1].copy()
        for axis in range(3):
            for d in (-1, 1):
                inner &= np.roll(p, d, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    sa, sb = surface(a), surface(b)
    d = np.linalg.norm(sa[:, None, :] - sb[None, :, :], axis=-1)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_hd95_of_a_shifted_cube_matches_brute_force():
    a = _cube((12, 12, 12), (2, 3, 2), 5)
    b = _cube((12, 12, 12), (4, 3, 3), 6)
    for spacing in ((1.0, 1.0, 1.0), (0.7, 0.7, 3.0)):
        assert metrics.hd95(a, b, spacing) == pytest.approx(_hd95_brute_force(a, b, spacing))
    edge = _cube((8, 8, 8), (0, 0, 4), 4)  # touches the array's border
    assert metrics.hd95(edge, a[:8, :8, :8], (1, 2, 3)) == pytest.approx(
        _hd95_brute_force(edge, a[:8, :8, :8], (1, 2, 3)))


def test_hd95_matches_monai(smooth):
    from monai.metrics import compute_hausdorff_distance  # needs SciPy: a test-only dependency

    rng = np.random.default_rng(0)
    for seed in range(4):
        a = smooth((14, 12, 10), seed=seed)[0] > 0
        b = smooth((14, 12, 10), seed=seed + 10)[0] > 0
        spacing = tuple(rng.uniform(0.5, 3.0, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = compute_hausdorff_distance(
                torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float(),
                include_background=True, percentile=95, spacing=spacing).item()
        assert metrics.hd95(a, b, spacing) == pytest.approx(expected, rel=1e-5)


def test_brats_regions_nest_the_labels():
    labels = np.zeros((4, 4, 4), dtype=np.float32)  # float, as read_volume returns it
    labels[0, 0, :] = [1, 2, 4, 0]
    regions = BRATS.masks(labels[None])
    assert set(regions) == {"ET", "TC", "WT"}
    assert regions["ET"][0, 0].tolist() == [False, False, True, False]
    assert regions["TC"][0, 0].tolist() == [True, False, True, False]
    assert regions["WT"][0, 0].tolist() == [True, True, True, False]
    assert sum(int(r.sum()) for r in regions.values()) == 1 + 2 + 3
    labels[1, 1, 1] = 3
    with pytest.raises(ValueError, match="3"):
        BRATS.masks(labels)


# --------------------------------------------------------------------------------------------
# Dependencies


def test_metrics_and_evaluation_run_without_scipy(tmp_path):
    """SciPy is a test-only dependency: the runtime code must work where it is missing."""
    code = """
import sys
sys.modules["scipy"] = None  # any `import scipy...` now fails
import numpy as np
from revmed import metrics
from revmed.regions import BRATS
a = np.zeros((8, 8, 8), bool); a[2:5, 2:5, 2:5] = True
b = np.roll(a, 1, axis=0)
x = np.random.default_rng(0).normal(size=(1, 8, 8, 8))
print(metrics.hd95(a, b, (1, 1, 2)), metrics.dice(a, b), metrics.sensitivity(a, b),
      metrics.ssim3d(x + 0.1, x, 4.0), metrics.psnr(x + 0.1, x, 4.0), metrics.rmse(x, x, a),
      metrics.interior(a, 3).sum(), sorted(BRATS.masks(a * 4)))
import revmed.evaluation, revmed.evaluation.preview
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "scipy" not in result.stderr.lower()
