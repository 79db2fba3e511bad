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

from pathlib import Path

import numpy as np
import torch
from torch import nn

from revmed.data.samples import load_sample
from revmed.data.training_patches import validation_cases
from revmed.errors import ConfigError
from revmed.inference.tiles import plan_tiles, slab_axis, tile_voxels, tiled_predict
from revmed.inference.windows import sliding_window_predict
from revmed.metrics import dice, psnr, ssim3d
from revmed.nn.norm_statistics import Statistics, freeze_norms
from revmed.preset import Preset
from revmed.regions import BRATS, LabelSet

#: The data range of images inside the network ([-1, 1]), for validation PSNR and SSIM.
NETWORK_RANGE = 2.0


def check_regions(preset: Preset, patches) -> LabelSet:
    """The label set segmentation trains on (BraTS for other objectives, where it is unused);
    ``ConfigError`` when the network's outputs do not match the data's regions."""
    labels = patches.labels
    if preset.train.objective != "segmentation" or labels is None:
        return BRATS
    if len(labels.names) != preset.data.out_channels:
        where = patches.dataset_root or "the data"
        raise ConfigError(f"preset {preset.name}: key 'data.out_channels' is "
                          f"{preset.data.out_channels}, but {where} declares "
                          f"{len(labels.names)} region(s) ({', '.join(labels.names)}); set "
                          f"data.out_channels = {len(labels.names)}")
    return labels


class Validator:
    """The validation cases of the dataset at ``root`` (none when it has no val split or no
    dataset is known), scored as ``preset`` trains (segmentation: the regions of ``labels``);
    calling it scores a network."""

    def __init__(self, root: Path | None, preset: Preset, device: torch.device,
                 labels: LabelSet | None = None) -> None:
        self.preset, self.device, self.labels = preset, device, labels or BRATS
        self.segmentation = preset.train.objective == "segmentation"
        #: The score ``best.pt`` is chosen by.
        self.score_key = "val_dice_worst" if self.segmentation else "val_psnr"
        self.kind, self.cases = validation_cases(root)
        wanted = ("segmentation",) if self.segmentation else ("paired", "hr-only")
        if self.kind not in wanted:
            self.cases = []
        self._samples: list[dict[str, np.ndarray]] | None = None

    def _predict(self, model: nn.Module, image: np.ndarray) -> np.ndarray:
        infer, train = self.preset.infer, self.preset.train
        return sliding_window_predict(model, image, self.preset.patch.size, infer.overlap,
                                      infer.sw_batch_size, self.device, infer.blend,
                                      precision=train.precision,
                                      channels_last=train.channels_last)

    def _predict_tiled(self, model: nn.Module, statistics: Statistics,
                       image: np.ndarray) -> np.ndarray:
        frozen = freeze_norms(model, statistics)
        slabs = slab_axis(self.preset.patch.size)
        tiles = plan_tiles(image.shape[1:], model.halo(),
                           tile_voxels(model.inference_bytes_per_voxel(), self.device),
                           align=model.stride, slabs=slabs)
        return tiled_predict(frozen, image, tiles, self.device, self.preset.train.precision,
                             self.preset.train.channels_last, slabs=slabs)

    def __call__(self, model: nn.Module,
                 statistics: dict[str, Statistics] | None = None) -> dict[str, float]:
        """The validation scores of ``model`` (``{}`` without validation cases), with F's
        norms frozen at ``statistics["forward"]`` when given (``TrainingStep.calibrate``);
        the model is left in training mode."""
        if not self.cases:
            return {}
        if self._samples is None:  # read once, on first use
            extra = (self.labels,) if self.segmentation else ()
            self._samples = [load_sample(c, self.kind, self.preset.data, *extra)
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
        if self.preset.data.intensity == "window":
            pred, data_range = np.clip(pred, -1.0, 1.0), NETWORK_RANGE
        else:  # z-scores: unbounded; the reference's range, as `revmed eval` defaults to
            data_range = float(sample["Y"].max() - sample["Y"].min())
        return {"val_psnr": psnr(pred, sample["Y"], data_range),
                "val_ssim": ssim3d(pred, sample["Y"], data_range)}
