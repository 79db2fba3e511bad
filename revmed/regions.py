"""BraTS label maps and the three nested tumour regions networks predict and are scored on.

BraTS label maps hold 0 (background), 1 (necrotic / non-enhancing core, NCR), 2 (oedema, ED)
and 4 (enhancing tumour, ET). Networks predict the overlapping regions as independent sigmoid
channels, in the order of ``REGIONS``: ET = {4}, TC = {1, 4}, WT = {1, 2, 4}. The label coding
lives here only: training targets, predicted label maps and evaluation all go through it.
"""

from __future__ import annotations

import numpy as np
import torch

#: BraTS label values: necrotic / non-enhancing core, peritumoural oedema, enhancing tumour.
BRATS_LABELS = {"NCR": 1, "ED": 2, "ET": 4}
#: The regions, in the order of a network's output channels.
REGIONS = ("ET", "TC", "WT")


def labels_to_regions(labels):
    """``(B, 1, D, H, W)`` (or ``(1, I, J, K)``) label map -> float ``(B, 3, ...)`` regions.

    Takes numpy arrays or torch tensors alike."""
    ncr, ed, et = (labels == BRATS_LABELS[k] for k in ("NCR", "ED", "ET"))
    tc, wt = ncr | et, ncr | ed | et
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
    labels[wt | tc | et] = BRATS_LABELS["ED"]
    labels[tc | et] = BRATS_LABELS["NCR"]
    labels[et] = BRATS_LABELS["ET"]
    return labels[None]


def region_masks(label_map: np.ndarray) -> dict[str, np.ndarray]:
    """The three nested BraTS evaluation regions of a label map.

    ``label_map``: ``(I, J, K)`` (or ``(1, I, J, K)``) with BraTS labels; float arrays holding
    whole numbers are accepted. Returns boolean ``(I, J, K)`` masks ``{"ET": 4, "TC": 1 | 4,
    "WT": 1 | 2 | 4}``. Any other label (e.g. 3, the ET label of BraTS 2023) raises
    ``ValueError``.
    """
    labels = np.asarray(label_map)
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 3:
        raise ValueError(f"expected an (I, J, K) label map, got shape {labels.shape}")
    unexpected = [v for v in np.unique(labels).tolist()
                  if v not in (0, *BRATS_LABELS.values())]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:8])
        raise ValueError(f"label map holds values other than the BraTS labels 0, 1, 2, 4: "
                         f"{shown}")
    masks = labels_to_regions(labels[None]) > 0.5
    return {name: masks[i] for i, name in enumerate(REGIONS)}
