"""Mappings between scanner space and network space: intensities and grids.

**Intensities.** Images inside the networks live in ``[-1, 1]`` (``window``: a fixed intensity
window, e.g. HU [-1150, 350] for CT) or are z-scored per channel inside the foreground
(``zscore``, for MRI, whose units are arbitrary); MONAI's transforms do both. The window is part
of the preset and of the checkpoint, so outputs are mapped back to the input's units.

**Grids.** A coarse grid and the grid refined by integer factors cover the same physical extent
(see ``revmed.io.volume.zoom_affine``): coarse voxel ``j`` along an axis refined by ``f`` is
centred on fine index ``f * j + (f - 1) / 2``.

* ``downsample``: block mean, a partial-volume model of thicker slices and larger pixels; used
  to simulate low-resolution inputs from high-resolution volumes.
* ``upsample``: put coarse samples on the fine grid with nearest-neighbour, trilinear or cubic
  B-spline interpolation (SimpleITK's B-spline interpolator, which pre-filters, so the curve
  passes through the samples; that is what "tricubic" means in the SR literature).

Arrays are channel-first ``(C, I, J, K)`` float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.transforms import NormalizeIntensity, ScaleIntensityRange

# --- intensities -------------------------------------------------------------------------------

INTENSITY_MODES = ("window", "zscore", "zscore-dataset")


def normalise(array: np.ndarray, intensity: str, window: Sequence[float],
              statistics: tuple[Sequence[float], Sequence[float]] | None = None) -> np.ndarray:
    """Map ``(C, I, J, K)`` scanner values to the network's range.

    ``window``: clip to ``[window[0], window[1]]`` and scale linearly to ``[-1, 1]``.
    ``zscore``: per channel, subtract the mean and divide by the std of the non-zero voxels
    (zero stays zero: the background of skull-stripped MRI).
    ``zscore-dataset``: per channel ``c``, ``(value - mean[c]) / std[c]`` with the fixed
    ``statistics = (mean, std)`` of a training split (``revmed.data.statistics``).
    """
    if intensity == "zscore-dataset":
        if statistics is None or len(statistics[0]) != len(array):
            raise ValueError(f"zscore-dataset needs one mean and std per channel of the "
                             f"{len(array)}-channel volume, got {statistics!r}")
        mean, std = statistics
        transform = NormalizeIntensity(subtrahend=np.asarray(mean, dtype=np.float32),
                                       divisor=np.asarray(std, dtype=np.float32),
                                       channel_wise=True, dtype=np.float32)
    elif intensity == "window":
        lo, hi = window
        transform = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True,
                                        dtype=np.float32)
    elif intensity == "zscore":
        transform = NormalizeIntensity(nonzero=True, channel_wise=True, dtype=np.float32)
    else:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")
    # MONAI may work in place: hand it a copy so the caller's array is never changed
    return np.asarray(transform(np.array(array, dtype=np.float32)), dtype=np.float32)


def denormalise(array: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Map ``[-1, 1]`` network values back to the window's units (the inverse of ``window``)."""
    lo, hi = window
    transform = ScaleIntensityRange(a_min=-1.0, a_max=1.0, b_min=lo, b_max=hi, clip=False,
                                    dtype=np.float32)
    return np.asarray(transform(np.array(array, dtype=np.float32)), dtype=np.float32)


def from_zscores(array: np.ndarray, statistics: tuple[Sequence[float], Sequence[float]]
                ) -> np.ndarray:
    """``value * std[c] + mean[c]`` per channel ``c`` of ``(C, I, J, K)``: the inverse of
    ``normalise(..., "zscore-dataset", ..., statistics)``, with nothing clipped."""
    mean, std = (np.asarray(v, dtype=np.float32).reshape(-1, 1, 1, 1) for v in statistics)
    return np.asarray(array, dtype=np.float32) * std + mean


def statistics_of(data, reverse: bool = False) -> tuple[tuple | None, tuple | None]:
    """``((mean, std) of the network input, (mean, std) of its output)`` of ``data`` (a
    preset's ``[data]`` or a checkpoint's data card) for F, swapped for G (``reverse``);
    ``(None, None)`` unless it z-scores with dataset statistics (``revmed.data.statistics``)."""
    if data.intensity != "zscore-dataset":
        return None, None
    inputs = (tuple(data.input_mean), tuple(data.input_std))
    outputs = (tuple(data.output_mean), tuple(data.output_std))
    return (outputs, inputs) if reverse else (inputs, outputs)


# --- grids -------------------------------------------------------------------------------------

UPSAMPLE_MODES = ("nearest", "trilinear", "bspline")


def _factors(factors: Sequence[int]) -> tuple[int, int, int]:
    f = tuple(int(v) for v in factors)
    if len(f) != 3 or any(v < 1 for v in f) or any(v != fv for v, fv in zip(f, factors, strict=True)):
        raise ValueError(f"factors must be three integers >= 1, got {factors!r}")
    return f  # type: ignore[return-value]


def coarse_shape(shape: Sequence[int], factors: Sequence[int]) -> tuple[int, int, int]:
    """Shape of the coarse grid that covers ``shape`` fine voxels: ``ceil(shape / factors)``."""
    f = _factors(factors)
    return tuple(-(-int(s) // v) for s, v in zip(shape, f, strict=True))  # type: ignore[return-value]


def downsample(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Block-mean ``(C, I, J, K)`` by ``factors`` -> ``(C, ceil(I/fi), ceil(J/fj), ceil(K/fk))``.

    A shape that is not a multiple of the factors is first padded by repeating the edge voxels.
    """
    f = _factors(factors)
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    pad = [(-s) % v for s, v in zip(array.shape[1:], f, strict=True)]
    if any(pad):
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
    return F.avg_pool3d(x, kernel_size=f, stride=f)[0].numpy()


def upsample(array: np.ndarray, factors: Sequence[int], mode: str = "bspline",
             shape: Sequence[int] | None = None) -> np.ndarray:
    """Interpolate ``(C, i, j, k)`` onto the grid refined by ``factors``.

    Returns ``(C, i*fi, j*fj, k*fk)``, cropped to ``shape`` when given (the fine grid a
    ``downsample`` came from).
    """
    f = _factors(factors)
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    full = tuple(s * v for s, v in zip(array.shape[1:], f, strict=True))
    if mode == "bspline":
        out = np.stack([_bspline(channel, f, full) for channel in array])
    else:
        x = torch.from_numpy(array)[None]
        if mode == "nearest":
            out = F.interpolate(x, size=full, mode="nearest")[0].numpy()
        else:
            out = F.interpolate(x, size=full, mode="trilinear", align_corners=False)[0].numpy()
    if shape is not None:
        out = out[:, : shape[0], : shape[1], : shape[2]]
    return np.ascontiguousarray(out, dtype=np.float32)


#: Coarse voxels repeated beyond each face before B-spline interpolation: ITK's spline
#: coefficients use mirror boundaries, which bend the curve near the faces and fail outright on
#: axes of fewer than four samples; a repeated margin gives a flat, finite extension instead.
_SPLINE_MARGIN = 2


def bspline_onto_unit_grid(array: np.ndarray, spacing, origin, size) -> np.ndarray:
    """Cubic B-spline resampling of ``(I, J, K)`` ``array``, whose voxel centres lie at
    ``origin + index * spacing``, onto the unit grid ``0 .. size - 1`` (float32; samples
    beyond the array take the nearest voxel)."""
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))  # SimpleITK arrays are (k, j, i)
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in origin])
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in size])
    resampler.SetOutputSpacing([1.0, 1.0, 1.0])
    resampler.SetOutputOrigin([0.0, 0.0, 0.0])
    resampler.SetInterpolator(sitk.sitkBSpline)
    resampler.SetUseNearestNeighborExtrapolator(True)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(image)).transpose(2, 1, 0)


def _bspline(channel: np.ndarray, f: tuple[int, int, int], full: tuple[int, ...]) -> np.ndarray:
    """Cubic B-spline interpolation of one ``(i, j, k)`` channel in fine-grid index units."""
    m = _SPLINE_MARGIN
    return bspline_onto_unit_grid(np.pad(channel, m, mode="edge"), f,
                                  [(v - 1) / 2.0 - m * v for v in f], full)


def simulate_low_resolution(array: np.ndarray, factors: Sequence[int], mode: str) -> np.ndarray:
    """Degrade ``array`` ``(C, I, J, K)`` by block means over ``factors``, then interpolate
    back to its grid with ``mode`` (``upsample``): what a scanner with coarser voxels would
    show, on the fine grid. Returns ``(C, I, J, K)``."""
    return upsample(downsample(array, factors), factors, mode, shape=array.shape[1:])
