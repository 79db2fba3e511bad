"""BraTS region coding: label maps <-> the three nested regions a network predicts.

BraTS label maps hold 0 (background), 1 (necrotic / non-enhancing core), 2 (oedema) and 4
(enhancing tumour). Networks predict the overlapping regions as independent sigmoid channels,
in the order of ``REGIONS``: ET = {4}, TC = {1, 4}, WT = {1, 2, 4}. Functions take numpy arrays
or torch tensors alike.
"""

from __future__ import annotations

import numpy as np
import torch

REGIONS = ("ET", "TC", "WT")


def labels_to_regions(labels):
    """``(B, 1, D, H, W)`` (or ``(1, I, J, K)``) label map -> float ``(B, 3, ...)`` regions."""
    et, tc, wt = labels == 4, (labels == 1) | (labels == 4), labels > 0
    if isinstance(labels, torch.Tensor):
        return torch.cat([et, tc, wt], dim=-4).float()
    return np.concatenate([et, tc, wt], axis=-4).astype(np.float32)


def regions_to_labels(regions: np.ndarray) -> np.ndarray:
    """``(3, I, J, K)`` boolean ET/TC/WT -> ``(1, I, J, K)`` uint8 BraTS label map.

    Nesting is imposed from the outside in: WT voxels get 2, those also in TC get 1, those also
    in ET get 4 (an ET voxel outside the predicted TC or WT still counts as tumour core and
    whole tumour, as its label implies).
    """
    et, tc, wt = (np.asarray(r, dtype=bool) for r in regions)
    labels = np.zeros(et.shape, dtype=np.uint8)
    labels[wt | tc | et] = 2
    labels[tc | et] = 1
    labels[et] = 4
    return labels[None]
