"""Training pairs from a thick-slice scan's own in-plane detail.

The in-plane axes of a thick-slice scan are sharp and its through-plane axis is not. Thick
slices are simulated along each in-plane axis, and the network learns to undo that; the same
network then refines the through-plane axis, where the thick slices are real (SMORE, Zhao et
al. 2021; ECLARE, Remedios et al. 2025). Each pair is built on the grid the network works on:

1. ``base``: the scan put on the network's grid, refined ``m``-fold along the through-plane
   axis by cubic B-spline (what inference gives the network, ``revmed.inference``);
2. ``target``: ``base`` with one in-plane axis resampled to the network's through-plane
   spacing (slice spacing / ``m``; the same voxels when the factor is whole and in-plane
   voxels are that size), cut to a whole number of slices;
3. ``input``: the target with thick slices simulated along that in-plane axis (the slice
   profile averaged over each slice, ``profile_matrix``), put back on the fine grid by cubic
   B-spline, as inference does with the real slices.

Both are then transposed so that the degraded axis sits where the through-plane axis is in
the scan, and the scan's own through-plane axis (blurred in input and target alike) sits on
the first in-plane axis: every pair has the same frame, whichever in-plane axis it came from.
Values stay in the scan's units here; ``normalise`` maps them to the network's range.
"""

from __future__ import annotations

import math

import numpy as np

from revmed.selfsr.plan import Refinement
from revmed.transforms import bspline_onto_unit_grid, upsample

#: Voxels repeated beyond each end before B-spline resampling (see revmed.transforms).
_MARGIN = 2


def resample_axis(array: np.ndarray, axis: int, count: int) -> np.ndarray:
    """``(I, J, K)`` float32 ``array`` with ``axis`` resampled by cubic B-spline to ``count``
    voxels over the same extent (first and last faces kept, ``revmed.io.zoom_affine``)."""
    size = array.shape[axis]
    if count == size:
        return np.array(array, dtype=np.float32)
    pad = [(0, 0)] * 3
    pad[axis] = (_MARGIN, _MARGIN)
    padded = np.pad(np.asarray(array, dtype=np.float32), pad, mode="edge")
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = count / size  # input voxels in output-voxel units
    origin = [0.0, 0.0, 0.0]
    origin[axis] = (spacing[axis] - 1.0) / 2.0 - _MARGIN * spacing[axis]
    shape = list(array.shape)
    shape[axis] = count
    return bspline_onto_unit_grid(padded, spacing, origin, shape)


def profile_matrix(fine: int, m: int, width: float, profile: str = "box") -> np.ndarray:
    """``(fine // m, fine)`` weights: row ``j`` is slice ``j`` (centred on fine voxel
    ``m j + (m - 1) / 2``, as ``revmed.transforms`` places coarse voxels) as an average of the
    fine voxels, ``width`` fine voxels wide. ``box``: each voxel weighted by its overlap with
    the slice (``width == m`` is the block mean); ``gaussian``: by the Gaussian of full width
    at half maximum ``width``. Rows sum to 1."""
    coarse = fine // m
    edges = np.arange(fine + 1, dtype=np.float64) - 0.5  # fine voxel i spans [i - 1/2, i + 1/2]
    centres = m * np.arange(coarse, dtype=np.float64) + (m - 1) / 2.0
    if profile == "box":
        lo = np.maximum(edges[None, :-1], (centres - width / 2.0)[:, None])
        hi = np.minimum(edges[None, 1:], (centres + width / 2.0)[:, None])
        weights = np.clip(hi - lo, 0.0, None)
    elif profile == "gaussian":
        sigma = width / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        cdf = np.vectorize(lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0))))
        cumulative = cdf((edges[None, :] - centres[:, None]) / sigma)
        weights = cumulative[:, 1:] - cumulative[:, :-1]
    else:
        raise ValueError(f"profile must be box or gaussian, got {profile!r}")
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def thick_slices(array: np.ndarray, axis: int, m: int, width: float,
                 profile: str = "box") -> np.ndarray:
    """``(I, J, K)`` ``array`` (its length along ``axis`` a multiple of ``m``) seen as thick
    slices every ``m`` voxels along ``axis`` (``profile_matrix``), then put back on its grid by
    cubic B-spline: what a thick-slice acquisition and inference's interpolation make of it."""
    weights = profile_matrix(array.shape[axis], m, width, profile)
    moved = np.moveaxis(np.asarray(array, dtype=np.float32), axis, -1)
    coarse = np.moveaxis(moved @ weights.T, -1, axis)
    factors = [1, 1, 1]
    factors[axis] = m
    return upsample(coarse[None], factors, "bspline", shape=array.shape)[0]


def frame(plan: Refinement, source: int) -> list[int]:
    """The transpose that puts in-plane axis ``source`` (degraded) where the through-plane
    axis is, the through-plane axis on the first in-plane axis, and the other in-plane axis on
    the second: ``pair = array.transpose(frame(plan, source))``."""
    first, second = plan.inplane
    other = second if source == first else first
    order = [0, 0, 0]
    order[plan.axis], order[first], order[second] = source, plan.axis, other
    return order


def scan_on_network_grid(array: np.ndarray, plan: Refinement) -> np.ndarray:
    """``(I, J, K)`` scan refined ``m``-fold along the through-plane axis by cubic B-spline."""
    return upsample(np.asarray(array, dtype=np.float32)[None], plan.sr_factors, "bspline")[0]


def training_pairs(array: np.ndarray, plan: Refinement) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(input, target)`` float32 pairs from the scan ``array`` ``(I, J, K)``, one per
    in-plane axis, in the scan's units (see the module doc)."""
    base = scan_on_network_grid(array, plan)
    m, fine = plan.network_factor, plan.fine_spacing
    width = plan.thickness / fine  # the slice profile in network-grid voxels
    pairs = []
    for source in plan.inplane:
        count = int(round(plan.shape[source] * plan.spacing[source] / fine))
        target = resample_axis(base, source, count)
        cut = [slice(None)] * 3
        cut[source] = slice(0, (count // m) * m)
        target = target[tuple(cut)]
        degraded = thick_slices(target, source, m, width, plan.profile)
        order = frame(plan, source)
        pairs.append((np.ascontiguousarray(degraded.transpose(order)),
                      np.ascontiguousarray(target.transpose(order))))
    return pairs
