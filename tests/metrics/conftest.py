"""Shared helpers for the metric and `revmed eval` tests: tiny smooth volumes written to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from revmed.io import Volume, make_affine, write_volume


def smooth_volume(shape=(16, 16, 16), seed=0, scale=400.0, offset=-200.0) -> np.ndarray:
    """A smooth ``(1, I, J, K)`` float32 volume: a sum of a few broad Gaussian blobs."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    out = np.zeros(shape)
    for _ in range(4):
        centre = rng.uniform(-0.5, 0.5, 3)
        width = rng.uniform(0.35, 0.6)
        r2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        out += rng.uniform(0.5, 1.0) * np.exp(-r2 / (2 * width**2))
    return (offset + scale * out).astype(np.float32)[None]


@pytest.fixture
def smooth():
    """``smooth(shape=(16, 16, 16), seed=0)`` -> a smooth ``(1, I, J, K)`` volume in HU-like
    values."""
    return smooth_volume


@pytest.fixture
def write(tmp_path):
    """``write("pred/case_000.nii.gz", array, spacing=(1, 1, 1))`` -> the written path.

    ``array`` is ``(C, I, J, K)`` or ``(I, J, K)``; the path is relative to ``tmp_path`` and its
    folders are created.
    """

    def make(relative: str, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0)) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        array = np.asarray(array, dtype=np.float32)
        if array.ndim == 3:
            array = array[None]
        write_volume(Volume(array, make_affine(spacing, origin=origin)), path)
        return path

    return make
