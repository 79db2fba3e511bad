"""The in-memory volume: a channel-first float array with its place in the world.

Conventions
-----------
* ``array`` has shape ``(C, I, J, K)``: channels first, then the three voxel axes in the order
  of the file's voxel index (NIfTI order, the same order nibabel and MONAI use). For a usual
  axial CT, ``K`` is the slice axis.
* ``affine`` is the 4x4 matrix mapping a voxel index ``(i, j, k, 1)`` to world coordinates in
  millimetres in the RAS+ frame (NIfTI / nibabel convention). Spacing, direction and origin are
  derived from it, never stored twice. DICOM, NRRD and MHA (LPS+) are converted on read and
  back on write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: RAS+ <-> LPS+ flip of the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A volume and its geometry.

    Attributes:
        array: ``(C, I, J, K)`` float32 voxel values (HU for CT after rescale).
        affine: ``(4, 4)`` voxel-index -> RAS+ millimetre transform.
        source: where the volume came from (a path, for messages).
        meta: free-form extras (e.g. ``series_uid``, ``modality``, ``channel_names``).
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim != 4:
            raise ValueError(f"array must be (C, I, J, K), got shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(I, J, K)``."""
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along ``(i, j, k)``."""
        return spacing_of(self.affine)

    @property
    def direction(self) -> np.ndarray:
        """``(3, 3)`` RAS+ unit direction of each voxel axis, as columns."""
        return self.affine[:3, :3] / self.spacing

    @property
    def origin(self) -> np.ndarray:
        """RAS+ position in mm of the centre of voxel ``(0, 0, 0)``."""
        return self.affine[:3, 3].copy()

    @property
    def axis_codes(self) -> str:
        """Where the voxel axes ``i, j, k`` point, as the RAS+ letters of their main direction
        (``"RAS"``, ``"LPS"``, ``"LAS"``, ...; see ``axis_codes``)."""
        return axis_codes(self.affine)

    def with_array(self, array: np.ndarray, affine: np.ndarray | None = None) -> Volume:
        """A copy with new voxels (and optionally a new affine), same source and meta."""
        return replace(self, array=array, affine=self.affine if affine is None else affine,
                       meta=dict(self.meta))


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each voxel axis: the column norms of the 3x3 part."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def make_affine(spacing, direction=None, origin=None) -> np.ndarray:
    """Build a RAS+ affine from spacing ``(3,)``, direction ``(3, 3)`` (columns) and origin."""
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing, dtype=np.float64)[None, :]
    if origin is not None:
        affine[:3, 3] = np.asarray(origin, dtype=np.float64)
    return affine


def zoom_affine(affine: np.ndarray, factors) -> np.ndarray:
    """Affine of the grid refined by ``factors`` (per voxel axis) over the same physical extent.

    Voxel ``i`` of the old grid covers old indices ``[i - 1/2, i + 1/2]``. Refining axis ``a`` by
    ``f`` divides the spacing by ``f`` and moves the centre of the new voxel 0 to old index
    ``(1/f - 1) / 2``, so the first and last faces stay where they were. A factor below 1
    coarsens the grid the same way.
    """
    f = np.asarray(factors, dtype=np.float64)
    if f.shape != (3,) or np.any(f <= 0):
        raise ValueError(f"factors must be three positive numbers, got {factors!r}")
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(1.0 / f)
    index_map[:3, 3] = (1.0 / f - 1.0) / 2.0
    return np.asarray(affine, dtype=np.float64) @ index_map


def axis_codes(affine: np.ndarray) -> str:
    """The orientation code of a RAS+ affine: per voxel axis, the world axis it runs along most
    (R/L, A/P or S/I) and the way it runs: ``"RAS"`` when ``i`` runs to the right, ``j`` to the
    front and ``k`` up; ``"LPS"`` is DICOM's usual order."""
    letters = (("L", "R"), ("P", "A"), ("I", "S"))
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    codes = []
    for axis in range(3):
        world = int(np.argmax(np.abs(columns[:, axis])))
        codes.append(letters[world][int(columns[world, axis] > 0)])
    return "".join(codes)
