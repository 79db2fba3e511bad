"""Scores on a dataset's validation split after each epoch, whole volumes at a time.

A RevGAN is scored by the mean PSNR and SSIM of F on the validation volumes, in the network's
``[-1, 1]`` range (``val_psnr``, ``val_ssim``; with ``zscore-dataset``, in z-scores with each
reference's range); a segmentation network by the Dice of each
region of its label set, their mean and the worst of them (BraTS: ``val_dice_ET``,
``val_dice_TC``, ``val_dice_WT``, ``val_dice``, ``val_dice_worst``). ``best.pt`` follows
``val_psnr`` for a RevGAN and ``val_dice_worst`` for segmentation: an epoch that gains on one
region by losing another does not count as better (the mean would let a large easy region pay
for a small one left unlearned).
Volumes run as inference runs them: a RevGAN with the epoch's normalisation statistics in
tiles (``revmed.inference.tiles``), anything else in sliding windows
(``revmed.inference.windows``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from revmed.checkpoint import ModelCard
from revmed.data.layout import Case
from revmed.data.samples import load_sample
from revmed.inference.tiles import plan_tiles, slab_axis, tile_voxels, tiled_predict
from revmed.inference.windows import sliding_window_predict
from revmed.metrics import dice, psnr, ssim3d
from revmed.nn.norm_statistics import Statistics, freeze_norms
from revmed.preset import DataSection, TrainSection

#: The data range of images inside the network ([-1, 1]), for validation PSNR and SSIM.
NETWORK_RANGE = 2.0


class Validator:
    """Scores a network on validation cases after each epoch; see the module doc.

    Args:
        cases: the validation cases (none: calling it returns ``{}``).
        kind: the kind of the dataset they belong to (cases of a kind the objective cannot
            be scored on are left out).
        data: the ``[data]`` section the cases are read with.
        train: the ``[train]`` section (objective, precision, memory format).
        card: the network's model card (patch size, ``[infer]`` settings, label set).
        device: where the network runs.
    """

    def __init__(self, cases: Sequence[Case], kind: str, data: DataSection, train: TrainSection,
                 card: ModelCard, device: torch.device) -> None:
        self.data, self.train, self.device = data, train, device
        self.patch_size, self.infer = card.patch_size, card.infer
        self.segmentation = train.objective == "segmentation"
        self.labels = card.data.labels
        #: The score ``best.pt`` is chosen by.
        self.score_key = "val_dice_worst" if self.segmentation else "val_psnr"
        wanted = ("segmentation",) if self.segmentation else ("paired", "hr-only")
        self.kind = kind
        self.cases = list(cases) if kind in wanted else []
        self._samples: list[dict[str, np.ndarray]] | None = None

    def _predict(self, model: nn.Module, image: np.ndarray) -> np.ndarray:
        infer, train = self.infer, self.train
        return sliding_window_predict(model, image, self.patch_size, infer.overlap,
                                      infer.sw_batch_size, self.device, infer.blend,
                                      precision=train.precision,
                                      channels_last=train.channels_last)

    def _predict_tiled(self, model: nn.Module, statistics: Statistics,
                       image: np.ndarray) -> np.ndarray:
        frozen = freeze_norms(model, statistics)
        slabs = slab_axis(self.patch_size)
        tiles = plan_tiles(image.shape[1:], model.halo(),
                           tile_voxels(model.inference_bytes_per_voxel(), self.device),
                           align=model.stride, slabs=slabs)
        return tiled_predict(frozen, image, tiles, self.device, self.train.precision,
                             self.train.channels_last, slabs=slabs)

    def __call__(self, model: nn.Module,
                 statistics: dict[str, Statistics] | None = None) -> dict[str, float]:
        """The validation scores of ``model`` (``{}`` without validation cases), with F's
        norms frozen at ``statistics["forward"]`` when given (``TrainingStep.calibrate``);
        the model is left in training mode."""
        if not self.cases:
            return {}
        if self._samples is None:  # read once, on first use
            extra = (self.labels,) if self.segmentation else ()
            self._samples = [load_sample(c, self.kind, self.data, *extra)
                             for c in self.cases]
        model.eval()
        scores: dict[str, list[float]] = {}
        for sample in self._samples:
            pred = (self._predict_tiled(model, statistics["forward"], sample["X"])
                    if statistics else self._predict(model, sample["X"]))
            for key, value in self._scores(pred, sample).items():
                scores.setdefault(key, []).append(value)
        model.train()
        result = {k: float(np.mean(v)) for k, v in scores.items()}
        if self.segmentation:
            regions = [result[f"val_dice_{r}"] for r in self.labels.names]
            result["val_dice"] = float(np.mean(regions))
            result["val_dice_worst"] = float(min(regions))
        return result

    def _scores(self, pred: np.ndarray, sample: dict[str, np.ndarray]) -> dict[str, float]:
        if self.segmentation:
            found = pred > 0.0  # sigmoid(logit) > 1/2
            truth = self.labels.to_regions(sample["label"]) > 0.5
            return {f"val_dice_{name}": dice(p, r)
                    for name, p, r in zip(self.labels.names, found, truth)}
        if self.data.intensity == "window":
            pred, data_range = np.clip(pred, -1.0, 1.0), NETWORK_RANGE
        else:  # z-scores: unbounded; the reference's range, as `revmed eval` defaults to
            data_range = float(sample["Y"].max() - sample["Y"].min())
        return {"val_psnr": psnr(pred, sample["Y"], data_range),
                "val_ssim": ssim3d(pred, sample["Y"], data_range)}
