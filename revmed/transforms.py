"""Intensity mapping between scanner units and the network's range, built from MONAI transforms.

Images inside the networks live in ``[-1, 1]`` (``window``: a fixed intensity window, e.g. HU
[-1150, 350] for CT) or are z-scored per channel inside the foreground (``zscore``, for MRI,
whose units are arbitrary). The window is part of the preset and of the checkpoint, so outputs
are mapped back to the input's units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import NormalizeIntensity, ScaleIntensityRange

INTENSITY_MODES = ("window", "zscore")


def normalise(array: np.ndarray, intensity: str, window: Sequence[float]) -> np.ndarray:
    """Map ``(C, I, J, K)`` scanner values to the network's range.

    ``window``: clip to ``[window[0], window[1]]`` and scale linearly to ``[-1, 1]``.
    ``zscore``: per channel, subtract the mean and divide by the std of the non-zero voxels
    (zero stays zero: the background of skull-stripped MRI).
    """
    if intensity == "window":
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
