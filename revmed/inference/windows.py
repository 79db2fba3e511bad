"""Whole volumes through a network window by window: what validation and inference share.

MONAI's ``sliding_window_inference`` sends windows (the training patch size) to the network's
device and blends their outputs with a Gaussian (or constant) weight; the volume and the
blended output stay on the CPU, in float32, so a whole CT fits where the network's activations
for it would not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from revmed.runtime import as_channels_last, autocast


def window_count(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """How many windows ``sliding_window_inference`` visits (for progress bars)."""
    total = 1
    for size, r in zip(shape, roi, strict=True):
        step = max(int(r * (1 - overlap)), 1)
        total *= 1 if size <= r else math.ceil((size - r) / step) + 1
    return total


def sliding_window_predict(net: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray,
                           roi_size: Sequence[int], overlap: float = 0.5,
                           sw_batch_size: int = 1, device: str | torch.device = "cpu",
                           blend: str = "gaussian",
                           progress: Callable[[int, int], None] | None = None,
                           precision: str = "fp32", channels_last: bool = False) -> np.ndarray:
    """Run ``net`` over ``image`` ``(C, I, J, K)`` window by window; returns ``(C', I, J, K)``.

    Windows of ``roi_size`` run on ``device`` under ``precision``'s autocast, in channels-last
    order with ``channels_last`` (``revmed.runtime``); ``progress(done, total)`` is called after
    each batch of ``sw_batch_size`` windows.
    """
    total = math.ceil(window_count(image.shape[1:], roi_size, overlap) / sw_batch_size)
    done = 0

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        nonlocal done
        if channels_last:
            batch = as_channels_last(batch)
        with autocast(precision, batch.device):
            out = net(batch).float()
        done += 1
        if progress is not None:
            progress(min(done, total), total)
        return out

    with torch.no_grad():
        out = sliding_window_inference(
            torch.from_numpy(np.ascontiguousarray(image))[None], roi_size=list(roi_size),
            sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap, mode=blend,
            sw_device=torch.device(device), device=torch.device("cpu"))
    return np.asarray(out[0].float().numpy(), dtype=np.float32)
