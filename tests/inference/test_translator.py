"""``Translator`` on whole volumes: the grid refinement of super-resolution, the window, the
blended windows and the values outside the window, checked on an untrained residual RevGAN
(whose output is its input)."""

from __future__ import annotations

import numpy as np

from revmed.checkpoint import write_payload
from revmed.inference import Translator
from revmed.io import Volume, make_affine, read_volume, write_volume, zoom_affine
from revmed.models import build_model
from revmed.transforms import downsample, upsample


def _oblique_volume(shape: tuple[int, int, int]) -> Volume:
    """A rotated, anisotropic volume of uniform noise in [-1000, 300] HU, ``(1, *shape)``."""
    rotation = np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    affine = make_affine([1.4, 1.6, 4.0], rotation, [12.0, -30.0, 40.0])
    rng = np.random.default_rng(0)
    return Volume(rng.uniform(-1000, 300, size=(1, *shape)).astype(np.float32), affine)


def test_untrained_residual_model_returns_the_interpolated_input(tmp_path):
    """The whole inference path (window, B-spline refinement, windows, blending, HU) at init."""
    kwargs = {"in_channels": 1, "out_channels": 1, "width": 4, "depth": 1, "residual": True}
    data = {"in_channels": 1, "out_channels": 1, "intensity": "window",
            "window": [-1150.0, 350.0], "sr_factors": [2, 2, 2], "sr_upsample": "bspline"}
    path = write_payload(tmp_path / "id.pt", {
        "model": {"kind": "revgan3d", "kwargs": kwargs}, "data": data, "patch_size": [8, 8, 8],
        "preset": {"infer": {"overlap": 0.5, "blend": "gaussian", "sw_batch_size": 1}},
        "state": {"generator": build_model("revgan3d", **kwargs).state_dict()}})
    lr = read_volume(write_volume(_oblique_volume((6, 7, 5)), tmp_path / "lr.nii.gz"))
    lr.array[0, 1, 1, 1], lr.array[0, 2, 3, 2], lr.array[0, 4, 4, 3] = 786.0, 1167.0, 3000.0
    lr.array[0, 0, 0, 0] = -2048.0  # outside the field of view
    sr = Translator.load(path).translate(lr)
    # the whole range, bone and metal above the window and padding below it included: the
    # network passes through what it cannot see, and the rest is exactly the interpolation
    expected = upsample(lr.array, [2, 2, 2], "bspline")
    assert expected.max() > 1500 and expected.min() < -1500
    np.testing.assert_allclose(sr.array, expected, atol=1e-3)
    np.testing.assert_allclose(sr.affine, zoom_affine(lr.affine, [2, 2, 2]))
    # G: block means; blocks of in-window voxels are exact, block means outside the window
    # pass through (blocks that mix both differ by the network's clipping, as they should)
    reverse = Translator.load(path).translate(sr, reverse=True)
    means = downsample(expected, [2, 2, 2])
    pure = downsample(((expected < -1150) | (expected > 350)).astype(np.float32), [2, 2, 2]) == 0
    beyond = (means < -1150) | (means > 350)
    assert pure.any() and beyond.any()
    np.testing.assert_allclose(reverse.array[pure], means[pure], atol=1e-3)
    np.testing.assert_allclose(reverse.array[beyond], means[beyond], atol=1e-3)
