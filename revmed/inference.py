"""Whole-volume inference: a trained RevGAN forward (F) or reverse (G), or a segmentation net.

The volume stays on the CPU; MONAI's ``sliding_window_inference`` sends windows of the
training patch size to the model's device and blends them with a Gaussian weight. For
super-resolution the input is first put on the grid refined by the checkpoint's factors
(``revmed.resample.upsample``), and the output keeps the input's physical extent and direction
with the finer spacing (``revmed.io.zoom_affine``). In reverse (``G``: high to low resolution)
the output is block-averaged back to the coarse grid.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from revmed.compilation import check_compiler, compile_plain_parts
from revmed.engine.checkpoint import load_checkpoint
from revmed.errors import InputError
from revmed.io import Volume, check_finite, zoom_affine
from revmed.memory import require_memory, voxel_bytes
from revmed.memory_format import as_channels_last, to_channels_last
from revmed.models import build_model
from revmed.precision import autocast
from revmed.resample import downsample, upsample
from revmed.shapes import shape_text
from revmed.transforms import denormalise, normalise


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

    Windows run on ``device`` under ``precision``'s autocast (``revmed.precision``), in
    channels-last order with ``channels_last`` (``revmed.memory_format``); the image and the
    blended output stay on the CPU, in float32.
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


@dataclass
class Translator:
    """A trained generator with what inference needs from its checkpoint."""

    model: nn.Module
    data: dict[str, Any]
    patch_size: list[int]
    infer: dict[str, Any]
    source: str
    device: torch.device
    channels_last: bool = False

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             compile: bool | None = None, channels_last: bool | None = None):
        return cls.from_checkpoint(load_checkpoint(path, kind=cls.model_kind), path, device,
                                   compile=compile, channels_last=channels_last)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], path: str | os.PathLike,
                        device: str | torch.device = "cpu", compile: bool | None = None,
                        channels_last: bool | None = None):
        """The predictor of a loaded checkpoint on ``device``. ``compile`` and
        ``channels_last`` (None: the checkpoint preset's ``[infer]`` values, off in
        checkpoints older than those keys) compile the network's plain parts
        (``revmed.compilation``) and run it in channels-last order."""
        model = build_model(checkpoint["model"]["kind"], **checkpoint["model"]["kwargs"])
        model.load_state_dict(checkpoint["state"]["generator"])
        device = torch.device(device)
        infer = checkpoint["preset"]["infer"]
        compile = infer.get("compile", False) if compile is None else compile
        channels_last = infer.get("channels_last", False) if channels_last is None \
            else channels_last
        model = model.to(device).eval()
        if channels_last:
            to_channels_last(model)
        if compile:
            check_compiler(device)
            compile_plain_parts(model)
        return cls(model, checkpoint["data"], checkpoint["patch_size"], infer, str(path),
                   device, channels_last)

    #: The model family of the checkpoints this predictor runs.
    model_kind = "revgan3d"
    output_dtype = np.float32

    def working_bytes(self, volume: Volume, reverse: bool = False) -> int:
        """Estimated bytes inference on ``volume`` holds at once on the CPU: the network's
        input on the output grid, MONAI's blended output and weight map, and the result."""
        grid = list(volume.shape)
        factors = list(self.data["sr_factors"])
        if factors != [1, 1, 1] and not reverse:
            grid = [s * f for s, f in zip(grid, factors)]
        out = self.data["in_channels"] if reverse else self.data["out_channels"]
        return voxel_bytes(grid, volume.channels + 3 * out + 2)

    def _checked_input(self, volume: Volume, reverse: bool = False) -> np.ndarray:
        """``volume``'s array in the network's range, after the checks every prediction
        makes: the channel count the model expects (its input, or its output for
        ``reverse``), memory for the whole inference, finite voxels."""
        expected = self.data["out_channels"] if reverse else self.data["in_channels"]
        if volume.channels != expected:
            raise InputError(f"{volume.source}: has {volume.channels} channel(s); the model "
                             f"({self.source}) expects {expected}")
        require_memory(volume.source or "volume", self.working_bytes(volume, reverse),
                       f"inference on its {shape_text(volume.shape)} grid and the "
                       "result")
        check_finite(volume)
        return normalise(volume.array, self.data["intensity"], self.data["window"])

    def _windows(self, net: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray,
                 overlap: float | None, sw_batch_size: int | None,
                 progress: Callable[[int, int], None] | None,
                 precision: str | None) -> np.ndarray:
        """``sliding_window_predict`` of ``net`` on ``image`` with this predictor's device and
        memory format; options left at None take the checkpoint preset's ``[infer]`` values
        (fp32 for checkpoints older than the precision key)."""
        infer = self.infer
        return sliding_window_predict(
            net, image, self.patch_size, infer["overlap"] if overlap is None else overlap,
            infer["sw_batch_size"] if sw_batch_size is None else sw_batch_size, self.device,
            blend=infer["blend"], progress=progress,
            precision=precision or infer.get("precision", "fp32"),
            channels_last=self.channels_last)

    def predict(self, volume: Volume, reverse: bool = False, **options) -> Volume:
        return self.translate(volume, reverse=reverse, **options)

    def translate(self, volume: Volume, reverse: bool = False, overlap: float | None = None,
                  sw_batch_size: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  precision: str | None = None) -> Volume:
        """F (``reverse=False``) or G applied to ``volume``, in the volume's own units.

        ``overlap``, ``sw_batch_size`` and ``precision`` default to the checkpoint preset's
        ``[infer]`` values.
        """
        data = self.data
        image = self._checked_input(volume, reverse)
        factors = list(data["sr_factors"])
        sr = factors != [1, 1, 1]
        affine = volume.affine
        if sr and not reverse:
            image = upsample(image, factors, data["sr_upsample"])
            affine = zoom_affine(volume.affine, factors)
        net = self.model.reverse if reverse else self.model
        out = self._windows(net, image, overlap, sw_batch_size, progress, precision)
        if sr and reverse:
            out = downsample(out, factors)
            affine = zoom_affine(volume.affine, [1.0 / f for f in factors])
        # the network only ever saw the window: values beyond it are clipped, not extrapolated
        out = denormalise(np.clip(out, -1.0, 1.0), data["window"])
        meta = {k: v for k, v in volume.meta.items() if k in ("units", "modality")}
        return Volume(out, affine, source=volume.source, meta=meta)


class Segmenter(Translator):
    """A trained segmentation network: volume in, BraTS label map out (same grid)."""

    model_kind = "iunet3d"
    output_dtype = np.uint8

    def predict(self, volume: Volume, reverse: bool = False, **options) -> Volume:
        if reverse:
            raise InputError(f"{self.source}: a segmentation model has no reverse direction")
        return self.segment(volume, **options)

    def segment(self, volume: Volume, overlap: float | None = None,
                sw_batch_size: int | None = None,
                progress: Callable[[int, int], None] | None = None,
                precision: str | None = None) -> Volume:
        """Label map ``(1, I, J, K)`` uint8 of ``volume`` ``(C, I, J, K)``, in its geometry."""
        from revmed.segmentation import regions_to_labels

        image = self._checked_input(volume)
        logits = self._windows(self.model, image, overlap, sw_batch_size, progress, precision)
        labels = regions_to_labels(logits > 0.0)
        return Volume(labels.astype(np.float32), volume.affine, source=volume.source,
                      meta={"units": "label"})


PREDICTORS = {cls.model_kind: cls for cls in (Translator, Segmenter)}


def load_predictor(path: str | os.PathLike, device: str | torch.device = "cpu",
                   compile: bool | None = None, channels_last: bool | None = None) -> Translator:
    """The ``Translator`` or ``Segmenter`` for the checkpoint at ``path`` (``compile`` and
    ``channels_last``: see ``Translator.from_checkpoint``)."""
    checkpoint = load_checkpoint(path)
    kind = checkpoint["model"]["kind"]
    if kind not in PREDICTORS:
        raise InputError(f"{path}: no inference for {kind} models")
    return PREDICTORS[kind].from_checkpoint(checkpoint, path, device, compile=compile,
                                            channels_last=channels_last)


def newest_checkpoint(runs_dir: str | os.PathLike = "runs") -> Path | None:
    """The most recently written ``best.pt`` under ``runs_dir/*/``, if any."""
    found = sorted(Path(runs_dir).glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None
