"""selfsr's plan (axis, factor, output grid) and its training pairs, on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from revmed.errors import ConfigError, InputError
from revmed.io import Volume, make_affine, zoom_affine
from revmed.selfsr import plan_refinement
from revmed.selfsr.pairs import (frame, profile_matrix, resample_axis, thick_slices,
                                 training_pairs)
from revmed.selfsr.sampling import PatchSampler
from revmed.selfsr.training import scan_window, voxel_patch
from revmed.transforms import downsample, upsample


def _volume(shape=(24, 20, 6), spacing=(1.0, 1.0, 4.0), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(size=(1, *shape)).astype(np.float32), make_affine(spacing),
                  source="scan.nii.gz")


def test_auto_finds_the_thick_axis_and_a_whole_factor():
    plan = plan_refinement(_volume(spacing=(0.5, 0.5, 2.0000001)))
    assert (plan.axis, plan.factor, plan.network_factor) == (2, 4.0, 4)
    assert plan.out_shape == (24, 20, 24) and not plan.resampled
    assert plan.sr_factors == (1, 1, 4) and plan.found
    # slices along i: the largest spacing wins, whatever its position
    plan = plan_refinement(_volume(shape=(5, 24, 20), spacing=(3.0, 1.0, 1.0)))
    assert (plan.axis, plan.factor, plan.out_shape) == (0, 3.0, (15, 24, 20))
    assert "axis i" in plan.describe() and "found from the spacing" in plan.describe()


def test_a_fractional_factor_trains_at_the_nearest_whole_one_and_resamples():
    volume = _volume(shape=(32, 32, 5), spacing=(0.7, 0.7, 5.0))
    plan = plan_refinement(volume)
    assert plan.factor == pytest.approx(5.0 / 0.7) and plan.network_factor == 7
    assert plan.out_shape == (32, 32, 36) and plan.resampled  # round(5 * 7.14)
    affine = plan.out_affine(volume.affine)
    assert np.allclose(affine, zoom_affine(volume.affine, [1, 1, 36 / 5]))
    # the same extent: the last face of the output is the input's
    assert affine[2, 2] * 36 == pytest.approx(5.0 * 5)
    assert "7x, resampled to 36 slices" in plan.describe()


def test_given_factor_and_axis():
    plan = plan_refinement(_volume(spacing=(1, 1, 1)), factor="2.5", axis="k")
    assert (plan.axis, plan.factor, plan.network_factor, plan.found) == (2, 2.5, 3, False)
    assert plan.out_shape == (24, 20, 15)


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({}, InputError, "close to isotropic"),
    ({"factor": "x"}, ConfigError, "give auto or a number"),
    ({"factor": 1.2}, ConfigError, "between 1.5 and 16"),
    ({"factor": 4, "axis": "z"}, ConfigError, "choose auto, i, j or k"),
    ({"factor": 4, "profile": "sinc"}, ConfigError, "choose box or gaussian"),
    ({"factor": 4, "thickness": -1.0}, ConfigError, "positive number of mm"),
])
def test_bad_plans_say_why(kwargs, error, words):
    with pytest.raises(error, match=words):
        plan_refinement(_volume(spacing=(1, 1, 1.2)), **kwargs)


def test_too_small_or_several_channels_is_refused():
    with pytest.raises(InputError, match="too few in-plane"):
        plan_refinement(_volume(shape=(12, 24, 4)))  # 12 voxels cannot hold 4 slices of 4x
    two = Volume(np.zeros((2, 24, 24, 6), np.float32), make_affine((1, 1, 4)), source="s")
    with pytest.raises(InputError, match="2 channels"):
        plan_refinement(two)


def test_box_profile_of_contiguous_slices_is_the_block_mean():
    rng = np.random.default_rng(1)
    array = rng.normal(size=(8, 6, 16)).astype(np.float32)
    ours = thick_slices(array, 2, 4, 4.0, "box")
    reference = upsample(downsample(array[None], (1, 1, 4)), (1, 1, 4), "bspline")[0]
    assert np.allclose(ours, reference, atol=1e-5)


def test_profiles_are_normalised_and_gaps_leave_voxels_out():
    box = profile_matrix(12, 4, 2.0, "box")  # 2 mm slices every 4 mm: gaps
    assert np.allclose(box.sum(axis=1), 1.0)
    assert np.allclose(box[0], [0, 0.5, 0.5] + [0] * 9)  # [0.5, 2.5] around 1.5
    wide = profile_matrix(12, 4, 3.0)[1]  # [4, 7] around 5.5: half of voxels 4 and 7
    assert np.allclose(wide, np.array([0] * 4 + [0.5, 1, 1, 0.5] + [0] * 4) / 3)
    gauss = profile_matrix(16, 4, 4.0, "gaussian")
    assert np.allclose(gauss.sum(axis=1), 1.0)
    row = gauss[1]  # centred on fine index 5.5: symmetric about it
    assert np.allclose(row[2:6], row[9:5:-1], atol=1e-6)


def test_resampling_keeps_the_extent():
    ramp = np.broadcast_to(np.arange(20, dtype=np.float32)[:, None, None], (20, 3, 3)).copy()
    out = resample_axis(ramp, 0, 25)  # 20 voxels of 1 mm -> 25 voxels of 0.8 mm
    centres = (np.arange(25) + 0.5) * 0.8 - 0.5  # in input voxel units, faces kept
    inner = slice(4, 21)  # away from the ends, where the edge is repeated
    assert np.allclose(out[inner, 1, 1], centres[inner], atol=1e-3)
    assert resample_axis(ramp, 1, 3) is not ramp and np.array_equal(resample_axis(ramp, 1, 3),
                                                                   ramp)


def test_pairs_put_the_degraded_axis_where_the_slices_are():
    volume = _volume(shape=(24, 20, 6), spacing=(1.0, 1.0, 4.0))
    plan = plan_refinement(volume)
    assert frame(plan, 0) == [2, 1, 0] and frame(plan, 1) == [2, 0, 1]
    pairs = training_pairs(volume.array[0], plan)
    base = upsample(volume.array, (1, 1, 4), "bspline")[0]
    (x0, y0), (x1, y1) = pairs
    # in-plane voxels of 1 mm are the network's 4 mm / 4: the target is the scan, transposed
    assert np.allclose(y0, base.transpose(2, 1, 0)) and y0.shape == (24, 20, 24)
    assert np.allclose(y1, base[:, :20].transpose(2, 0, 1)) and y1.shape == (24, 24, 20)
    # the input is the target with thick slices simulated along the last axis only
    expected = thick_slices(base.transpose(2, 1, 0), 2, 4, 4.0)
    assert np.allclose(x0, expected, atol=1e-5)
    assert not np.allclose(x0, y0)


def test_patches_are_seeded_and_fit_every_pair():
    pairs = [(np.full((10, 12, 16), 0.5, np.float32), np.full((10, 12, 16), 0.5, np.float32)),
             (np.zeros((16, 8, 16), np.float32), np.zeros((16, 8, 16), np.float32))]
    one, two = PatchSampler(pairs, (12, 12, 12), 3), PatchSampler(pairs, (12, 12, 12), 3)
    assert one.size == (10, 8, 12)
    a, b = one.batch(3), two.batch(3)
    assert a["X"].shape == (3, 1, 10, 8, 12)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in "XY")


def test_window_and_patch_axes():
    lo, hi = scan_window([np.linspace(0, 100, 1001, dtype=np.float32)])
    assert lo == pytest.approx(0.1 - 2 * 0.998, abs=1e-3) and hi == pytest.approx(101.8, 1e-3)
    with pytest.raises(InputError, match="one value"):
        scan_window([np.ones((4, 4, 4), np.float32)])
    plan = plan_refinement(_volume(shape=(5, 24, 20), spacing=(3.0, 1.0, 1.0)))
    assert voxel_patch((1, 16, 32), plan) == [32, 1, 16]
