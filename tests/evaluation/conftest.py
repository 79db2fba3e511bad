"""Shared helpers for the `revmed eval` tests: volumes written to disk (the ``smooth``
volumes are the root conftest's, shared with the metric tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from revmed.io import Volume, make_affine, write_volume


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
