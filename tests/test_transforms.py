"""revmed.transforms: intensity windows, and grid refinement (geometry of the refined grid and
interpolation of coarse samples)."""

from __future__ import annotations

import numpy as np
import pytest

from revmed.io import make_affine, zoom_affine
from revmed.transforms import coarse_shape, denormalise, downsample, normalise, upsample


def _world_corners(affine, shape):
    """World positions of the outer faces' corners: voxel centres +- half a voxel."""
    lo = affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    hi = affine @ np.array([s - 0.5 for s in shape] + [1.0])
    return lo[:3], hi[:3]


def test_zoom_affine_keeps_extent_and_divides_spacing():
    rotation = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, 0.6], [-0.6, 0.0, 0.8]])
    coarse = make_affine([1.4, 1.4, 4.0], rotation, [10.0, -20.0, 30.0])
    fine = zoom_affine(coarse, [2, 2, 4])
    np.testing.assert_allclose(np.linalg.norm(fine[:3, :3], axis=0), [0.7, 0.7, 1.0])
    np.testing.assert_allclose(fine[:3, :3] / [0.7, 0.7, 1.0], rotation, atol=1e-12)
    for a, b in zip(_world_corners(coarse, (5, 6, 7)), _world_corners(fine, (10, 12, 28))):
        np.testing.assert_allclose(a, b, atol=1e-9)
    # coarse voxel 0 sits at the centre of fine voxels 0..f-1
    np.testing.assert_allclose(fine @ [0.5, 0.5, 1.5, 1], coarse @ [0, 0, 0, 1], atol=1e-9)


def test_downsample_is_block_mean_and_pads_by_repeating_edges():
    array = np.arange(2 * 4 * 4 * 6, dtype=np.float32).reshape(2, 4, 4, 6)
    out = downsample(array, [2, 2, 3])
    assert out.shape == (2, 2, 2, 2)
    np.testing.assert_allclose(out[1, 1, 0, 1], array[1, 2:4, 0:2, 3:6].mean())
    odd = downsample(array[:, :3], [2, 1, 1])
    assert odd.shape == (2, 2, 4, 6) and coarse_shape((3, 4, 6), (2, 1, 1)) == (2, 4, 6)
    np.testing.assert_allclose(odd[:, 1], array[:, 2])  # voxel 2 averaged with its own copy


@pytest.mark.parametrize("mode", ["nearest", "trilinear", "bspline"])
def test_upsample_reproduces_coarse_samples_at_their_centres(mode):
    rng = np.random.default_rng(0)
    coarse = rng.random((1, 5, 6, 7), dtype=np.float32)
    fine = upsample(coarse, [3, 3, 1], mode)  # odd factors: centres fall on fine voxels
    assert fine.shape == (1, 15, 18, 7)
    np.testing.assert_allclose(fine[:, 1::3, 1::3, :], coarse, atol=1e-5)


def test_trilinear_and_bspline_follow_a_linear_ramp_inside():
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32)[None, None, None], (1, 6, 6, 16)).copy()
    for mode in ("trilinear", "bspline"):
        fine = upsample(ramp, [1, 1, 2], mode)[0, 3, 3]
        expected = (np.arange(32) + 0.5) / 2 - 0.5  # fine index -> coarse coordinate
        np.testing.assert_allclose(fine[10:-10], expected[10:-10], atol=1e-3)  # away from faces


def test_upsample_crops_to_the_original_shape():
    hr = np.random.default_rng(1).random((1, 9, 8, 7), dtype=np.float32)
    low = downsample(hr, [2, 2, 2])
    assert upsample(low, [2, 2, 2], "bspline", shape=hr.shape[1:]).shape == hr.shape


def test_window_maps_to_unit_range_and_back():
    hu = np.array([-3000, -1150, -400, 350, 2000], dtype=np.float32).reshape(1, 5, 1, 1)
    unit = normalise(hu, "window", (-1150, 350))
    np.testing.assert_allclose(unit.ravel(), [-1, -1, 0, 1, 1])
    np.testing.assert_allclose(denormalise(unit, (-1150, 350)).ravel(),
                               [-1150, -1150, -400, 350, 350])


def test_zscore_uses_foreground_per_channel():
    array = np.zeros((2, 4, 4, 4), dtype=np.float32)
    array[0, :2] = 10.0
    array[0, 0] = 20.0
    array[1, 1:] = 3.0
    out = normalise(array, "zscore", (0, 1))
    fg = array[0][array[0] > 0]
    np.testing.assert_allclose(out[0][array[0] > 0], (fg - fg.mean()) / fg.std(), rtol=1e-5)
    assert np.all(out[0][array[0] == 0] == 0)
