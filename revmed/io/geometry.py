"""The grid of a volume file (shape, voxel spacing, channels), from its header where it can.

Checking that the volumes of a dataset fit together should not read every voxel of every case:
``read_geometry`` reads only the header of a NIfTI file, and the whole volume otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from revmed.io.dispatch import read_volume
from revmed.io.formats import NIFTI_SUFFIXES, volume_suffix
from revmed.io.nifti import read_nifti_header
from revmed.io.volume import spacing_of
from revmed.sizes import shape_text

#: Spacings closer than this (mm, absolute and relative) count as equal.
SPACING_ATOL, SPACING_RTOL = 1e-3, 1e-4


@dataclass(frozen=True)
class Geometry:
    """Shape, voxel spacing (mm) and channel count of a volume file."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    channels: int

    def describe(self) -> str:
        return (f"shape {shape_text(self.shape)}, spacing "
                f"{'x'.join(f'{s:g}' for s in self.spacing)} mm")

    def same_grid(self, other: Geometry) -> bool:
        return self.shape == other.shape and bool(np.allclose(
            self.spacing, other.spacing, rtol=SPACING_RTOL, atol=SPACING_ATOL))


def read_geometry(path: str | os.PathLike) -> Geometry:
    """The geometry of a volume: from the header for NIfTI, else by reading the volume."""
    path = Path(path)
    suffix = None if path.is_dir() else volume_suffix(path)
    if suffix is not None and suffix.lower() in NIFTI_SUFFIXES:
        image, shape, channels = read_nifti_header(path)
        spacing = tuple(float(s) for s in spacing_of(image.affine))
        return Geometry(tuple(shape), spacing, channels)  # type: ignore[arg-type]
    volume = read_volume(path)
    return Geometry(volume.shape, tuple(float(s) for s in volume.spacing), volume.channels)
