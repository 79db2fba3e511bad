"""Where the slices of one DICOM volume lie, and the regular grid revmed reads them onto.

Every slice carries its own ImagePositionPatient; a volume is a regular grid only when the
slices step by one constant distance along their normal, each exactly behind the last. Scanners
do not always do that:

* **Gantry tilt** (CT): the image plane is tilted but the table moves straight, so each slice
  is shifted in its own plane against the one before (a sheared grid). Stacking the slices
  along the normal puts the last one tens of millimetres from where the scanner put it.
* **Irregular steps**: reconstructions with two slice spacings, or missing slices (gaps).

``plan_grid`` measures all of this from the positions alone (the GantryDetectorTilt tag is
"not intended for mathematical computations", and is not read). A stack that fits a regular
grid within ``POSITION_TOL_MM`` is read as it is. Any other is, by default, read onto a
regular grid on which every pixel keeps the place the scanner gave it
(``revmed.io.dicom.resample``): the output planes keep the slices' orientation and pixel
spacing; each slice is moved within its plane by its measured shift (so the grid grows to hold
every shifted slice, as dcm2niix's tilt correction does); along the normal the grid spans the
first to the last slice in equal steps of the median slice step, each output slice
interpolated linearly from the two slices around it. With ``mode="strict"`` such a stack is an
``InputError`` instead. Never is one averaged spacing used.

Geometry is in DICOM's LPS+ patient frame until the RAS+ affine is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from revmed.errors import InputError
from revmed.io.volume import LPS_TO_RAS

#: A slice within this distance (mm) of its place on a regular grid is on it.
POSITION_TOL_MM = 0.05
#: Slices closer than this (mm) along the normal are at the same position.
SAME_POSITION_MM = 1e-3
#: Direction cosines must have unit norm and be perpendicular within this tolerance (GDCM's).
ORTHONORMAL_TOL = 1e-3
#: Largest difference between the ImageOrientationPatient of two slices of one volume.
SAME_ORIENTATION_TOL = 1e-3
#: PixelSpacing values of two slices of one volume may differ by this fraction.
SAME_SPACING_REL = 1e-4
#: What ``mode`` may be: read irregular stacks onto a regular grid, or refuse them.
GEOMETRY_MODES = ("resample", "strict")


@dataclass(frozen=True)
class SliceGrid:
    """The regular grid a stack of slices is read onto, and where each slice lands on it.

    Attributes:
        affine: ``(4, 4)`` RAS+ voxel-to-mm affine of the grid. Axis ``I`` runs along the
            row cosines (pixel columns), ``J`` along the column cosines (pixel rows), ``K``
            along the slice normal ``row x column``: a right-handed frame.
        shape: ``(I, J, K)``.
        order: ``(n,)`` the given slices in order along the normal.
        depth: ``(n,)`` where each ordered slice lies along ``K``, in output slices
            (whole numbers unless the steps were irregular).
        shift: ``(n, 2)`` where each ordered slice's first pixel lands on the output plane,
            in output pixels along ``(I, J)`` (zero unless the slices were shifted in-plane).
        steps_mm: ``(n - 1,)`` the distances between neighbouring slices along the normal.
        tilt_degrees: the angle between the slices' step and their normal (gantry tilt).
        correction_mm: the largest distance between where a plain stack of the slices
            (along the normal, at their mean spacing) puts a pixel and where the scanner put
            it; 0 for a regular stack.
        findings: what made the stack irregular, in words (empty for a regular stack).
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    order: np.ndarray
    depth: np.ndarray
    shift: np.ndarray
    steps_mm: np.ndarray
    tilt_degrees: float
    correction_mm: float
    findings: tuple[str, ...]

    @property
    def resampled(self) -> bool:
        """Whether voxels are interpolated (the stack was not a regular grid)."""
        return bool(self.findings)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def describe(self) -> str:
        """What was found and done, in one phrase (empty for a regular stack)."""
        if not self.findings:
            return ""
        spacing = "x".join(f"{v:.4g}" for v in self.spacing)
        return (f"{' and '.join(self.findings)}: resampled onto a regular {spacing} mm grid "
                f"(largest correction {self.correction_mm:.3g} mm)")


def check_plane(where: str, orientations: np.ndarray, spacings: np.ndarray,
                sizes: set[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, column, spacing)`` shared by every slice: the LPS unit row and column cosines
    and the PixelSpacing ``(between rows, between columns)``. ``InputError`` for mixed slice
    sizes, missing, non-orthonormal or differing orientations, and missing, non-positive or
    differing pixel spacings. ``orientations``: ``(n, 6)``; ``spacings``: ``(n, 2)``."""
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise InputError(f"{where}: the slices have mixed sizes {shown} (rows x columns)")
    _check_spacing(where, spacings)
    if np.isnan(orientations).any():
        raise InputError(f"{where}: some slices lack a valid ImageOrientationPatient; cannot "
                         "place them in space")
    row, col = orientations[0, :3], orientations[0, 3:]
    row_norm, col_norm, dot = np.linalg.norm(row), np.linalg.norm(col), float(row @ col)
    if max(abs(row_norm - 1), abs(col_norm - 1), abs(dot)) > ORTHONORMAL_TOL:
        raise InputError(
            f"{where}: non-orthonormal direction cosines in ImageOrientationPatient "
            f"{np.round(orientations[0], 6).tolist()} (norms {row_norm:.4g} and "
            f"{col_norm:.4g}, dot product {dot:.3g})")
    spread = float(np.abs(orientations - orientations[0]).max())
    if spread > SAME_ORIENTATION_TOL:
        raise InputError(f"{where}: the slices have different orientations "
                         f"(ImageOrientationPatient differs by up to {spread:.3g})")
    row = row / row_norm
    col = col - (col @ row) * row
    return row, col / np.linalg.norm(col), spacings[0]


def _check_spacing(where: str, spacings: np.ndarray) -> None:
    if np.isnan(spacings).any():
        raise InputError(f"{where}: some slices lack a valid PixelSpacing; cannot size the "
                         "voxels")
    if np.any(spacings <= 0):
        bad = spacings[np.any(spacings <= 0, axis=1)][0]
        raise InputError(f"{where}: PixelSpacing {bad.tolist()} mm is not a voxel size")
    spread = np.abs(spacings - spacings[0]).max() / spacings[0].max()
    if spread > SAME_SPACING_REL:
        shown = ", ".join(sorted({"x".join(f"{v:g}" for v in row) for row in spacings}))
        raise InputError(f"{where}: the slices have different PixelSpacing ({shown} mm); "
                         "they cannot share one grid")


def plan_grid(where: str, row: np.ndarray, col: np.ndarray, spacing: np.ndarray,
              size: tuple[int, int], positions: np.ndarray, mode: str = "resample") -> SliceGrid:
    """The grid the slices at ``positions`` ``(n, 3)`` (LPS mm) are read onto.

    ``row``, ``col``: LPS unit direction cosines; ``spacing``: PixelSpacing ``(between rows,
    between columns)``; ``size``: ``(columns, rows)`` of a slice. ``mode`` ``"strict"``
    refuses an irregular stack (module doc). ``InputError`` for slices at one position.
    """
    if mode not in GEOMETRY_MODES:
        raise InputError(f"dicom_geometry {mode!r}: choose one of {', '.join(GEOMETRY_MODES)}",
                         option="dicom_geometry")
    normal = np.cross(row, col)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    ordered, along = positions[order], along[order]
    steps = np.diff(along)
    stacked = int(np.sum(steps < SAME_POSITION_MM))
    if stacked:
        raise InputError(f"{where}: {stacked} slice(s) lie at the same position as another "
                         "slice; the series may hold several volumes (time points, echoes)")
    n = len(along)
    mean_step = (along[-1] - along[0]) / (n - 1) if n > 1 else 1.0
    offsets = ordered - ordered[0]
    in_plane = np.stack([offsets @ row, offsets @ col], axis=1)  # (n, 2) mm along I, J
    plain_depth = np.arange(n, dtype=np.float64)
    regular = bool(np.all(np.abs(along - along[0] - plain_depth * mean_step) <= POSITION_TOL_MM))
    flat = bool(np.all(np.abs(in_plane) <= POSITION_TOL_MM))
    tilt = _tilt_degrees(in_plane, along - along[0])
    stacked_at = ordered[0] + plain_depth[:, None] * mean_step * normal
    correction = float(np.linalg.norm(ordered - stacked_at, axis=1).max()) if n > 1 else 0.0
    findings = tuple(_findings(regular, flat, tilt, steps, in_plane))
    if findings and mode == "strict":
        raise InputError(f"{where}: {' and '.join(findings)}; a regular grid would misplace "
                         f"pixels by up to {correction:.3g} mm", fix="dicom_geometry")
    pixel = np.array([spacing[1], spacing[0]])  # mm along I (between columns), J (rows)
    if regular:
        depth, step = plain_depth, mean_step
    else:
        count = int(round((along[-1] - along[0]) / float(np.median(steps)))) + 1
        step = (along[-1] - along[0]) / (count - 1)
        depth = (along - along[0]) / step
    if findings:
        shift, low, grown = _in_plane_shifts(in_plane / pixel)
    else:  # on the grid within POSITION_TOL_MM: read as it is
        shift, low, grown = np.zeros((n, 2)), np.zeros(2), np.zeros(2, dtype=int)
    axes = np.stack([row * pixel[0], col * pixel[1], normal * step], axis=1)  # LPS columns
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ axes
    affine[:3, 3] = LPS_TO_RAS @ (ordered[0] + axes[:, :2] @ low)
    shape = (int(size[0] + grown[0]), int(size[1] + grown[1]), int(round(depth[-1])) + 1)
    return SliceGrid(affine, shape, order, depth, shift, steps, tilt,
                     correction if findings else 0.0, findings)


def _tilt_degrees(in_plane: np.ndarray, along: np.ndarray) -> float:
    """The angle between the slices' mean step and their normal (least squares over all)."""
    if len(along) < 2 or float(along @ along) == 0:
        return 0.0
    slope = along @ in_plane / float(along @ along)  # in-plane mm per mm along the normal
    return math.degrees(math.atan(float(np.linalg.norm(slope))))


def _findings(regular: bool, flat: bool, tilt: float, steps: np.ndarray,
              in_plane: np.ndarray) -> list[str]:
    """What makes a stack irregular, in words."""
    found = []
    if not flat:
        if tilt > 0.01:
            found.append(f"slices step {tilt:.3g} degrees off their normal (gantry tilt)")
        else:
            found.append(f"slices shifted in-plane by up to "
                         f"{float(np.abs(in_plane).max()):.3g} mm")
    if not regular:
        usual = float(np.median(steps))
        multiple = np.rint(steps / usual)
        whole = (multiple >= 2) & (np.abs(steps / usual - multiple) < 0.1)
        missing = int(np.sum((multiple - 1)[whole]))
        gaps = f" (about {missing} slice(s) missing)" if missing else ""
        found.append(f"slice steps from {steps.min():.4g} to {steps.max():.4g} mm "
                     f"(median {usual:.4g}){gaps}")
    return found


def _in_plane_shifts(shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shift, low, grown)``: each slice's shift ``(n, 2)`` on the output plane in pixels
    (all >= 0), the output plane's first pixel against the first slice's (``low``, pixels),
    and how many pixels the plane grows along ``(I, J)`` to hold every shifted slice.
    Shifts within a thousandth of a whole pixel are made whole."""
    whole = np.rint(shift)
    shift = np.where(np.abs(shift - whole) < 1e-3, whole, shift)
    low = np.floor(np.minimum(shift.min(axis=0), 0.0))
    high = np.ceil(np.maximum(shift.max(axis=0), 0.0))
    return shift - low, low, (high - low).astype(int)
