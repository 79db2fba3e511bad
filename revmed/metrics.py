"""Image-quality and segmentation metrics on numpy volumes.

Every function takes numpy arrays and returns a Python ``float`` (or, for ``interior``, a
boolean mask). Shapes follow revmed's conventions:

* images are ``(C, I, J, K)`` (channels first, as in ``Volume.array``) or ``(I, J, K)`` for one
  channel; ``pred`` and ``ref`` must have the same shape;
* masks are boolean (or 0/1) ``(I, J, K)`` or ``(1, I, J, K)`` and apply to every channel;
* values are in the files' units (HU for CT), so MAE and RMSE are in those units too.

Where MONAI implements a metric it is used (MAE, RMSE, PSNR, SSIM, Dice); the docstrings name
the function. The symmetric 95th-percentile Hausdorff distance follows MONAI's definition but is
computed with torch (surface voxels) and SimpleITK (exact Euclidean distance map with the voxel
spacing), because MONAI's CPU implementation needs SciPy, which revmed does not depend on.

Conventions for empty segmentation masks (the BraTS convention: a region absent from both the
reference and the prediction is a perfect answer):

============================  ======  ===========  ======
case                          dice    sensitivity  hd95
============================  ======  ===========  ======
both empty                    1.0     1.0          0.0
reference empty, pred not     0.0     1.0          inf
pred empty, reference not     0.0     0.0          inf
============================  ======  ===========  ======

``inf`` (never ``nan``) marks "no surface to measure against", so a mean over cases that
contains it is ``inf`` too rather than silently skipping the case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

#: Window of MONAI's (and Wang et al.'s) SSIM: an 11-voxel Gaussian with sigma 1.5 per axis.
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
#: SSIM needs at least this many voxels along every axis (the window shrinks to fit, down to 3).
SSIM_MIN_SIZE = 3


# --------------------------------------------------------------------------------------------
# Helpers


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``ref`` as float64 ``(C, I, J, K)`` arrays of the same shape."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, got {pred.shape} and "
                         f"{ref.shape}")
    if pred.ndim == 3:
        pred, ref = pred[None], ref[None]
    if pred.ndim != 4:
        raise ValueError(f"expected (C, I, J, K) or (I, J, K) arrays, got shape {pred.shape}")
    return pred.astype(np.float64, copy=False), ref.astype(np.float64, copy=False)


def _mask3d(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``mask`` as a boolean ``(I, J, K)`` array matching the spatial ``shape``."""
    mask = np.asarray(mask)
    if mask.ndim == 4 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.shape != tuple(shape):
        raise ValueError(f"mask of shape {mask.shape} does not match the image's spatial shape "
                         f"{tuple(shape)}")
    return mask.astype(bool, copy=False)


def _flat(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The compared values as float64 ``(1, N)`` tensors (all channels; masked voxels only)."""
    pred, ref = _pair(pred, ref)
    if mask is not None:
        m = _mask3d(mask, pred.shape[1:])
        if not m.any():
            raise ValueError("the mask selects no voxels")
        pred, ref = pred[:, m], ref[:, m]
    return (torch.from_numpy(np.ascontiguousarray(pred)).reshape(1, -1),
            torch.from_numpy(np.ascontiguousarray(ref)).reshape(1, -1))


def _binary(name: str, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 4 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 3:
        raise ValueError(f"{name} must be an (I, J, K) mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


# --------------------------------------------------------------------------------------------
# Image quality


def mae(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error ``mean(|pred - ref|)`` over all channels and (masked) voxels.

    ``pred``, ``ref``: ``(C, I, J, K)`` or ``(I, J, K)``; ``mask``: ``(I, J, K)``, optional.
    In the images' units. Uses ``monai.metrics.MAEMetric`` (float64).
    """
    from monai.metrics import MAEMetric

    p, r = _flat(pred, ref, mask)
    return float(MAEMetric(reduction="mean")(p, r).item())


def rmse(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square error ``sqrt(mean((pred - ref)^2))`` over all channels and voxels.

    ``pred``, ``ref``: ``(C, I, J, K)`` or ``(I, J, K)``; ``mask``: ``(I, J, K)``, optional:
    with a mask, the mean runs over the masked voxels of every channel (for a 6-channel tensor
    volume: 6 x mask voxels values). In the images' units. Uses ``monai.metrics.RMSEMetric``.
    Raises ``ValueError`` for an empty mask.
    """
    from monai.metrics import RMSEMetric

    p, r = _flat(pred, ref, mask)
    return float(RMSEMetric(reduction="mean")(p, r).item())


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float,
         mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio ``20 log10(data_range) - 10 log10(MSE)`` in dB.

    ``pred``, ``ref``: ``(C, I, J, K)`` or ``(I, J, K)``; ``data_range``: the width of the value
    range (e.g. 1500 for the CT window [-1150, 350] HU), required because the "peak" of a CT or
    MRI volume is a choice, not a property of the file; ``mask``: ``(I, J, K)``, optional (MSE
    over the masked voxels of every channel). Identical volumes give ``inf``.
    Uses ``monai.metrics.PSNRMetric(max_val=data_range)`` on float64 values.
    """
    from monai.metrics import PSNRMetric

    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive number, got {data_range}")
    p, r = _flat(pred, ref, mask)
    if torch.equal(p, r):
        return math.inf
    return float(PSNRMetric(max_val=data_range, reduction="mean")(p, r).item())


def ssim_window(shape: Sequence[int]) -> tuple[int, int, int]:
    """The SSIM window used for a volume of spatial ``shape`` ``(I, J, K)``.

    11 voxels per axis (MONAI's and Wang et al.'s default), shrunk on an axis shorter than
    that to the largest odd size that fits. Raises ``ValueError`` when an axis has fewer than
    ``SSIM_MIN_SIZE`` voxels.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"expected a 3D spatial shape, got {shape}")
    if min(shape) < SSIM_MIN_SIZE:
        raise ValueError(f"SSIM needs at least {SSIM_MIN_SIZE} voxels along every axis, got a "
                         f"volume of shape {shape}")
    return tuple(min(SSIM_WINDOW, s if s % 2 else s - 1) for s in shape)  # type: ignore


def ssim3d(pred: np.ndarray, ref: np.ndarray, data_range: float,
           low: float | None = None) -> float:
    """Mean 3D structural similarity (Wang et al. 2004) over all channels and window positions.

    ``pred``, ``ref``: ``(C, I, J, K)`` or ``(I, J, K)``; each channel is compared on its own
    and the SSIM map is averaged over channels and every position where the window fits inside
    the volume ("valid" positions, no padding).

    ``data_range`` sets the stability constants ``c1 = (0.01 R)^2``, ``c2 = (0.03 R)^2``.
    SSIM's luminance term is not invariant to shifting the values, and misbehaves where the
    local mean crosses zero (e.g. around 0 HU in CT), so both volumes are first shifted by
    ``low`` (default: the minimum of ``ref``) and divided by ``data_range``: the reference then
    spans ``[0, range / data_range]`` like the non-negative images SSIM was designed for. Pass
    ``low=0`` to compare the values as they are, like MONAI and scikit-image do.

    Window: an 11-voxel Gaussian (sigma 1.5) per axis, shrunk on short axes (``ssim_window``).
    Uses ``monai.metrics.SSIMMetric(spatial_dims=3, data_range=1)`` on the shifted, scaled
    values. Returns 1.0 for identical volumes.
    """
    from monai.metrics import SSIMMetric

    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive number, got {data_range}")
    p, r = _pair(pred, ref)
    window = ssim_window(p.shape[1:])
    offset = float(r.min()) if low is None else float(low)
    x = torch.from_numpy((p - offset) / data_range).float()[None]  # (1, C, I, J, K)
    y = torch.from_numpy((r - offset) / data_range).float()[None]
    metric = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=window,
                        kernel_sigma=SSIM_SIGMA, reduction="mean")
    return float(metric(x, y).item())


def interior(mask: np.ndarray, size: int = 5) -> np.ndarray:
    """The voxels of ``mask`` whose whole ``size``-cube neighbourhood lies inside the mask.

    ``mask``: boolean ``(I, J, K)`` (or ``(1, I, J, K)``); returns a boolean ``(I, J, K)``.
    This is a binary erosion by a ``size x size x size`` cube centred on each voxel; the space
    outside the array counts as outside the mask, so voxels closer than ``size // 2`` to the
    array's border are never interior. With ``size=5`` this is the "voxels surrounded by a
    5x5x5 cube within the full brain mask" of the RevGAN paper's HCP evaluation. Computed as a
    max-pooling of the mask's complement (torch).
    """
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size!r}")
    m = _binary("mask", mask)
    r = int(size) // 2
    outside = torch.from_numpy(~m).float()[None, None]
    outside = F.pad(outside, (r, r, r, r, r, r), mode="constant", value=1.0)
    touched = F.max_pool3d(outside, kernel_size=int(size), stride=1)[0, 0]
    return (touched == 0).numpy()


# --------------------------------------------------------------------------------------------
# Segmentation


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap ``2 |P & R| / (|P| + |R|)`` of two binary ``(I, J, K)`` masks.

    Both empty: 1.0; exactly one empty: 0.0. Uses ``monai.metrics.compute_dice`` with
    ``ignore_empty=False``.
    """
    from monai.metrics import compute_dice

    p, r = _binary("pred", pred), _binary("ref", ref)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {p.shape} and {r.shape}")
    value = compute_dice(torch.from_numpy(p)[None, None].float(),
                         torch.from_numpy(r)[None, None].float(),
                         include_background=True, ignore_empty=False)
    return float(value.item())


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Sensitivity (recall, true-positive rate) ``|P & R| / |R|`` of binary ``(I, J, K)`` masks.

    The fraction of the reference that the prediction finds. An empty reference has nothing to
    miss: 1.0 whatever the prediction (false positives show in ``dice`` and ``hd95``).
    """
    p, r = _binary("pred", pred), _binary("ref", ref)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {p.shape} and {r.shape}")
    total = int(r.sum())
    if total == 0:
        return 1.0
    return float(np.logical_and(p, r).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """The surface voxels of a binary ``(I, J, K)`` mask: mask voxels with a face neighbour
    outside the mask (or on the array's border).

    The same surface MONAI's Hausdorff distance uses (the mask minus its erosion by the
    6-connected cross, with the outside of the array counted as background).
    """
    m = _binary("mask", mask)
    x = torch.from_numpy(m).float()[None, None]
    padded = F.pad(x, (1, 1, 1, 1, 1, 1), mode="constant", value=0.0)
    eroded = x.clone()
    for axis in range(3):
        for shift in (0, 2):
            sl = [slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1)]
            sl[2 + axis] = slice(shift, shift + m.shape[axis])
            eroded = torch.minimum(eroded, padded[tuple(sl)])
    return m & ~eroded[0, 0].bool().numpy()


def _distance_to(target: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance in mm from every voxel to the nearest ``target`` voxel (SimpleITK).

    ``target``: non-empty boolean ``(I, J, K)``; ``spacing``: mm along ``(i, j, k)``.
    """
    image = sitk.GetImageFromArray(target.astype(np.uint8).transpose(2, 1, 0))  # (k, j, i)
    image.SetSpacing([float(s) for s in spacing])
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    d = sitk.GetArrayFromImage(distance).transpose(2, 1, 0).astype(np.float64)
    d[target] = 0.0  # target voxels (inside the object the map is <= 0)
    return np.maximum(d, 0.0)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)
         ) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two binary masks, in mm.

    ``pred``, ``ref``: boolean ``(I, J, K)``; ``spacing``: voxel size in mm along ``(i, j, k)``.
    For each surface voxel of ``pred`` (``surface``), the distance between voxel centres to
    the nearest surface voxel of ``ref``, and the other way round; the result is the larger of
    the two 95th percentiles (linear interpolation, ``numpy.percentile``). This is the
    definition of ``monai.metrics.compute_hausdorff_distance(percentile=95, directed=False)``,
    which it matches; it is computed here with an exact Euclidean distance map
    (``SimpleITK.SignedMaurerDistanceMap``) because MONAI's CPU path needs SciPy.

    Both empty: 0.0; exactly one empty: ``inf``.
    """
    p, r = _binary("pred", pred), _binary("ref", ref)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {p.shape} and {r.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(not math.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers, got {spacing}")
    has_p, has_r = bool(p.any()), bool(r.any())
    if not has_p and not has_r:
        return 0.0
    if not has_p or not has_r:
        return math.inf
    # Only the bounding box of both masks (plus one voxel) matters: crop for speed.
    both = np.argwhere(p | r)
    lo = np.maximum(both.min(axis=0) - 1, 0)
    hi = np.minimum(both.max(axis=0) + 2, p.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    # Surfaces come from the uncropped masks, so a mask touching the array border keeps its
    # border voxels as surface.
    sp, sr = surface(p)[box], surface(r)[box]
    p_to_r = _distance_to(sr, spacing)[sp]
    r_to_p = _distance_to(sp, spacing)[sr]
    return float(max(np.percentile(p_to_r, 95), np.percentile(r_to_p, 95)))
