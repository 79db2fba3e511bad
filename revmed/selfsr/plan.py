"""What to refine in a thick-slice scan, read from its spacing: the through-plane axis, the
factor, the integer factor the network works at, and the output grid.

A thick-slice scan has two fine in-plane axes and one coarse through-plane axis (0.7 x 0.7 x
5 mm CT, 1 x 1 x 4 mm MRI). ``plan_refinement`` finds that axis (the largest spacing) and the
factor (its spacing over the mean in-plane spacing: 5 / 0.7 = 7.14), or takes them as given.
The network refines by the nearest whole factor ``m`` (7), the factor a checkpoint's
``data.sr_factors`` can hold; when ``m`` differs from the factor, its output is resampled along
the axis onto the output grid: ``round(slices * factor)`` voxels over the same extent
(``revmed.io.zoom_affine``), so the output spacing is the extent over that count.

The slice profile (how much of the body one slice averages along the axis) is a box as wide
as the slice spacing by default (contiguous slices, the block mean of
``revmed.transforms.downsample``); ``thickness`` narrower than the spacing models gaps between
slices, wider models overlapping slices, and ``profile="gaussian"`` a Gaussian of that full
width at half maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from revmed.errors import ConfigError, InputError
from revmed.io import Volume, zoom_affine
from revmed.preset import MAX_SR_FACTOR
from revmed.sizes import shape_text

#: The voxel axes by name, as the command line gives them.
AXES = ("i", "j", "k")
#: Slice profiles: the box of contiguous slices, or a Gaussian of the same width at half height.
PROFILES = ("box", "gaussian")
#: Below this ratio of through-plane to in-plane spacing a scan counts as isotropic.
MIN_FACTOR = 1.5
#: In-plane voxels the training pairs need along each in-plane axis, per unit of ``m``.
MIN_INPLANE_BLOCKS = 4


@dataclass(frozen=True)
class Refinement:
    """How one scan is refined.

    Attributes:
        axis: the through-plane voxel axis (0, 1, 2 for i, j, k).
        factor: output refinement along it (may be fractional, e.g. 7.14).
        network_factor: the whole factor the network refines by (``round(factor)``).
        shape: the scan's spatial shape ``(I, J, K)``.
        spacing: the scan's spacing in mm along ``(i, j, k)``.
        thickness: width of the slice profile in mm (the slice spacing for contiguous slices).
        profile: ``box`` or ``gaussian`` (see the module doc).
        found: whether axis and factor were read from the spacing (``auto``).
    """

    axis: int
    factor: float
    network_factor: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    thickness: float
    profile: str = "box"
    found: bool = True

    @property
    def inplane(self) -> tuple[int, int]:
        """The two in-plane voxel axes."""
        return tuple(a for a in range(3) if a != self.axis)  # type: ignore[return-value]

    @property
    def fine_spacing(self) -> float:
        """Spacing in mm along the axis on the network's grid: slice spacing / ``m``."""
        return self.spacing[self.axis] / self.network_factor

    @property
    def sr_factors(self) -> tuple[int, int, int]:
        """The network's factors per voxel axis (``data.sr_factors`` of its checkpoint)."""
        return tuple(self.network_factor if a == self.axis else 1  # type: ignore[return-value]
                     for a in range(3))

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """The output grid's shape: ``round(slices * factor)`` along the axis."""
        count = max(1, int(round(self.shape[self.axis] * self.factor)))
        return tuple(count if a == self.axis else n  # type: ignore[return-value]
                     for a, n in enumerate(self.shape))

    @property
    def resampled(self) -> bool:
        """Whether the network's grid is resampled onto the output grid (fractional factor)."""
        return self.out_shape[self.axis] != self.shape[self.axis] * self.network_factor

    def out_affine(self, affine: np.ndarray) -> np.ndarray:
        """The output grid's affine: same extent and direction, refined along the axis."""
        zoom = [self.out_shape[a] / self.shape[a] for a in range(3)]
        return zoom_affine(affine, zoom)

    def describe(self) -> str:
        """One line: what was found (or given) and what will be done."""
        inplane = "x".join(f"{self.spacing[a]:g}" for a in self.inplane)
        how = "found from the spacing" if self.found else "as given"
        gaps = ""
        if abs(self.thickness - self.spacing[self.axis]) > 1e-6 or self.profile != "box":
            gaps = f", {self.profile} slice profile {self.thickness:g} mm wide"
        grid = (f"; the network refines {self.network_factor}x, resampled to "
                f"{self.out_shape[self.axis]} slices" if self.resampled else "")
        spacing = self.spacing[self.axis] * self.shape[self.axis] / self.out_shape[self.axis]
        return (f"through-plane axis {AXES[self.axis]} ({self.spacing[self.axis]:g} mm slices, "
                f"{inplane} mm in-plane{gaps}), {how}: refining {self.factor:.3g}x to "
                f"{shape_text(self.out_shape)} voxels of {spacing:.3g} mm along "
                f"{AXES[self.axis]}{grid}")


def _axis(volume: Volume, axis: str | int) -> tuple[int, bool]:
    """The through-plane axis: given (a name or index) or the largest spacing (ties: the
    later axis, the usual slice axis)."""
    if axis in ("auto", None):
        spacing = volume.spacing
        return int(2 - np.argmax(spacing[::-1])), True
    if isinstance(axis, str) and axis.lower() in AXES:
        return AXES.index(axis.lower()), False
    if isinstance(axis, int) and 0 <= axis < 3:
        return axis, False
    raise ConfigError(f"axis {axis!r}: choose auto, i, j or k", option="axis")


def _factor(volume: Volume, axis: int, factor: str | float) -> tuple[float, bool]:
    """The refinement factor: given, or the slice spacing over the mean in-plane spacing."""
    spacing = volume.spacing
    if factor in ("auto", None):
        inplane = float(np.mean([spacing[a] for a in range(3) if a != axis]))
        found = float(spacing[axis] / inplane)
        if found < MIN_FACTOR:
            raise InputError(
                f"{volume.source or 'volume'}: its spacing {_spacing_text(spacing)} is close "
                f"to isotropic (through-plane over in-plane {found:.2f}), so there is nothing "
                "to refine; give the factor to refine anyway", fix="factor")
        # a header's 0.7 / 3.5 is 4.999999: a whole factor within 1 % is that factor
        return (float(round(found)) if abs(found - round(found)) < 0.01 * found else found), True
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise ConfigError(f"factor {factor!r}: give auto or a number such as 4 or 7.14",
                          option="factor") from None
    if not np.isfinite(value) or value < MIN_FACTOR or value > MAX_SR_FACTOR:
        raise ConfigError(f"factor {factor}: must be between {MIN_FACTOR:g} and "
                          f"{MAX_SR_FACTOR}", option="factor")
    return value, False


def _spacing_text(spacing) -> str:
    return "x".join(f"{v:g}" for v in np.round(np.asarray(spacing, dtype=float), 4)) + " mm"


def plan_refinement(volume: Volume, factor: str | float = "auto", axis: str | int = "auto",
                    thickness: float | None = None, profile: str = "box") -> Refinement:
    """The ``Refinement`` of ``volume`` (see the module doc). ``factor``: ``"auto"`` or a
    number; ``axis``: ``"auto"``, ``"i"``, ``"j"``, ``"k"`` or 0-2; ``thickness``: the slice
    profile's width in mm (None: the slice spacing); ``profile``: one of ``PROFILES``.

    Raises ``InputError`` for a scan that cannot be refined (isotropic with ``auto``, too small
    in-plane, not one channel) and ``ConfigError`` for bad arguments.
    """
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r}: choose {' or '.join(PROFILES)}",
                          option="profile")
    source = volume.source or "volume"
    if volume.channels != 1:
        raise InputError(f"{source}: has {volume.channels} channels; selfsr refines one-channel "
                         "scans (give each channel as a scan of its own)")
    index, axis_found = _axis(volume, axis)
    value, factor_found = _factor(volume, index, factor)
    m = max(2, int(np.floor(value + 0.5)))
    spacing = tuple(float(s) for s in volume.spacing)
    if thickness is None:
        thickness = spacing[index]
    elif not np.isfinite(thickness) or thickness <= 0:
        raise ConfigError(f"thickness {thickness}: must be a positive number of mm",
                          option="slice_thickness")
    small = [AXES[a] for a in range(3) if a != index
             and volume.shape[a] * spacing[a] / (spacing[index] / m) < MIN_INPLANE_BLOCKS * m]
    if small:
        raise InputError(f"{source}: {shape_text(volume.shape)} voxels are too few in-plane "
                         f"(axis {', '.join(small)}) to learn {m}x from: each in-plane axis "
                         f"needs at least {MIN_INPLANE_BLOCKS * m} voxels of "
                         f"{spacing[index] / m:.3g} mm")
    return Refinement(axis=index, factor=value, network_factor=m, shape=volume.shape,
                      spacing=spacing, thickness=float(thickness), profile=profile,
                      found=axis_found and factor_found)
