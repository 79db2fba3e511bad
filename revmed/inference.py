"""Whole-volume inference from a checkpoint: a trained RevGAN forward (F) or reverse (G), or a
segmentation network.

``Translator`` (super-resolution and domain adaptation) and ``Segmenter`` are siblings under
``Predictor``, which holds the network and its model card (``revmed.checkpoint``), checks
inputs and runs the windows (``revmed.windows``). A translator whose checkpoint holds
normalisation statistics runs instead with its instance norms frozen, in a few large tiles
whose result does not depend on the tiling (``revmed.tiles``, docs/inference.md; in slabs
when it was trained on patches one voxel thin, as selfsr's are). For super-resolution the
input is first put on the grid refined by the card's factors
(``revmed.transforms.upsample``), and the output keeps the input's physical extent and
direction with the finer spacing (``revmed.io.zoom_affine``).
In reverse (``G``: high to low resolution) the output is block-averaged back to the coarse
grid.

Outputs keep the input's full range. The network only sees intensities inside the card's
window (HU [-1150, 350] for chest CT), so it cannot say anything of bone at 1200 HU or metal at
3000 HU; where the input (on the output grid: interpolated for super-resolution, block-averaged
for ``G``) lies outside the window, the output is that input value, not the window's edge.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from revmed.checkpoint import Checkpoint, ModelCard, load_checkpoint
from revmed.errors import CheckpointError, InputError
from revmed.io import Volume, check_finite, zoom_affine
from revmed.runtime import inference_precision, prepare
from revmed.models import get_family
from revmed.nn.fused import fuse_for_inference
from revmed.nn.norm_statistics import freeze_norms
from revmed.sizes import require_memory, shape_text, voxel_bytes
from revmed.tiles import (plan_tiles, runs_in_tiles, slab_axis, tile_voxels,
                          tiled_predict)
from revmed.transforms import (denormalise, downsample, from_zscores, normalise, statistics_of,
                               upsample)
from revmed.windows import sliding_window_predict

Progress = Callable[[int, int], None]


class Predictor:
    """A trained network on a device with the model card of its checkpoint.

    Attributes:
        model: the network, in eval mode on ``device``.
        card: the checkpoint's ``ModelCard`` (data mapping, window size, ``[infer]`` settings).
        source: where the checkpoint came from (for messages).
        channels_last: whether windows run in channels-last order.
        tiles_channels_last: whether tiles do (``tile_order``).
    """

    #: The preset tasks whose checkpoints this predictor runs.
    tasks: tuple[str, ...] = ()
    #: The voxel type its outputs are written with.
    output_dtype: type = np.float32

    def __init__(self, model: nn.Module, card: ModelCard, source: str, device: torch.device,
                 channels_last: bool = False,
                 tiled: dict[bool, tuple[nn.Module, int]] | None = None,
                 tiles_channels_last: bool | None = None) -> None:
        self.model, self.card, self.source = model, card, source
        self.device, self.channels_last = device, channels_last
        #: whether tiles run in channels-last order (``tile_order``)
        self.tiles_channels_last = (channels_last if tiles_channels_last is None
                                    else tiles_channels_last)
        #: per direction (``reverse``), the network with frozen norms and its halo, for
        #: checkpoints that hold normalisation statistics (``revmed.tiles``)
        self.tiled = tiled or {}

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             compile: bool | None = None,  # noqa: A002 - the preset key's name
             channels_last: bool | None = None) -> Predictor:
        """The predictor of the checkpoint at ``path``; ``CheckpointError`` naming the file
        when the checkpoint is for another task."""
        checkpoint = load_checkpoint(path)
        if checkpoint.card.task not in cls.tasks:
            raise CheckpointError(f"{path}: holds a {checkpoint.card.kind} model for task "
                                  f"{checkpoint.card.task!r}, not for {cls.__name__}")
        return cls.from_checkpoint(checkpoint, path, device, compile, channels_last)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, source: str | os.PathLike,
                        device: str | torch.device = "cpu", compile: bool | None = None,  # noqa: A002
                        channels_last: bool | None = None) -> Predictor:
        """The predictor of a loaded checkpoint on ``device``. ``compile`` and
        ``channels_last`` (None: the card's ``[infer]`` values) compile the network's plain
        parts and run it in channels-last order (``revmed.runtime``)."""
        card, device = checkpoint.card, torch.device(device)
        model = card.build()
        model.load_state_dict(checkpoint.state["generator"])
        compile = card.infer.compile if compile is None else compile
        tiles_channels_last = tile_order(card, device, channels_last)
        channels_last = card.infer.channels_last if channels_last is None else channels_last
        tiled = {reverse: (prepare(net.eval() if compile else
                                   fuse_for_inference(net.eval(), tiles_channels_last),
                                   device, tiles_channels_last, compile), halo)
                 for reverse, (net, halo) in frozen_directions(model, checkpoint, source).items()}
        model = prepare(model.eval(), device, channels_last=channels_last, compile=compile)
        return cls(model, card, str(source), device, channels_last, tiled, tiles_channels_last)

    def predict(self, volume: Volume, reverse: bool = False, **options) -> Volume:
        """What ``revmed infer`` writes for ``volume`` (see the subclasses)."""
        raise NotImplementedError

    def working_bytes(self, volume: Volume, reverse: bool = False) -> int:
        """Estimated bytes inference on ``volume`` holds at once on the CPU: the input on the
        output grid in its units and in the network's range, MONAI's blended output and weight
        map, and the result."""
        data, grid = self.card.data, list(volume.shape)
        if data.refines_grid and not reverse:
            grid = [s * f for s, f in zip(grid, data.sr_factors)]
        out = data.in_channels if reverse else data.out_channels
        return voxel_bytes(grid, 2 * volume.channels + 3 * out + 2)

    def _check_input(self, volume: Volume, reverse: bool = False) -> None:
        """The checks every prediction makes: the channel count the model expects (its
        input, or its output for ``reverse``), memory for the whole inference, finite
        voxels."""
        data = self.card.data
        expected = data.out_channels if reverse else data.in_channels
        if volume.channels != expected:
            raise InputError(f"{volume.source}: has {volume.channels} channel(s); the model "
                             f"({self.source}) expects {expected}")
        require_memory(volume.source or "volume", self.working_bytes(volume, reverse),
                       f"inference on its {shape_text(volume.shape)} grid and the result")
        check_finite(volume)

    def _check_output(self, values: np.ndarray, volume: Volume) -> None:
        """``CheckpointError`` naming the model when its output for ``volume`` holds NaN or
        infinite values (damaged or diverged weights): checked before anything is written,
        since such a result must never be saved as if it were one."""
        finite = np.isfinite(values)
        if finite.all():
            return
        bad, source = int(finite.size - np.count_nonzero(finite)), volume.source or "the input"
        raise CheckpointError(f"{self.source}: the model's output for {source} has {bad} of "
                              f"{finite.size} values that are not finite (NaN or infinite); "
                              "its weights are damaged or diverged, so nothing was written")

    def _windows(self, net: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray,
                 overlap: float | None, sw_batch_size: int | None, progress: Progress | None,
                 precision: str | None) -> np.ndarray:
        """``sliding_window_predict`` of ``net`` on ``image`` with this predictor's device and
        memory format; options left at None take the card's ``[infer]`` values."""
        infer = self.card.infer
        return sliding_window_predict(
            net, image, self.card.patch_size, infer.overlap if overlap is None else overlap,
            infer.sw_batch_size if sw_batch_size is None else sw_batch_size, self.device,
            blend=infer.blend, progress=progress,
            precision=inference_precision(precision or infer.precision, self.device),
            channels_last=self.channels_last)


def tile_order(card: ModelCard, device: torch.device, channels_last: bool | None) -> bool:
    """Whether tiles run in channels-last order: as asked, else always on the CPU (with the
    fused convolutions of ``revmed.nn.fused`` it ran a chest-CT tile 1.4x faster than the
    contiguous order, docs/benchmarks.md), else as the card's ``infer.channels_last`` says."""
    if channels_last is not None:
        return channels_last
    return device.type == "cpu" or card.infer.channels_last


def frozen_directions(model: nn.Module, checkpoint: Checkpoint,
                      source: str | os.PathLike) -> dict[bool, tuple[nn.Module, int]]:
    """``{reverse: (network, halo)}`` for the directions whose normalisation statistics the
    checkpoint holds for every instance norm they run: the network with those norms frozen
    (``revmed.nn.norm_statistics``), whose result does not depend on the tiling. Older
    checkpoints have none and run in blended windows."""
    saved = checkpoint.state.get("norm_statistics")
    if (not isinstance(saved, dict) or not get_family(checkpoint.card.kind).tiles
            or not runs_in_tiles(checkpoint.card.patch_size)):
        return {}
    found = {}
    for reverse, key in ((False, "forward"), (True, "reverse")):
        statistics = saved.get(key)
        if not isinstance(statistics, dict) or set(statistics) != model.norm_names(reverse):
            continue
        try:
            found[reverse] = (freeze_norms(model, statistics), model.halo(reverse))
        except (ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{source}: {exc}") from None
    return found


def keep_outside_window(out: np.ndarray, source: np.ndarray,
                        window: tuple[float, float]) -> np.ndarray:
    """``out`` ``(C, I, J, K)``, with the voxels where ``source`` (the input on the output
    grid, same shape) lies outside ``window`` taken from ``source``: what the network cannot
    see, it passes through (see the module doc). In place; returns ``out``."""
    lo, hi = window
    outside = (source < lo) | (source > hi)
    out[outside] = source[outside]
    return out


class Translator(Predictor):
    """A trained RevGAN: F (X -> Y) or, in reverse, G (Y -> X), in the volume's own units."""

    tasks = ("sr", "da")

    def predict(self, volume: Volume, reverse: bool = False, **options) -> Volume:
        return self.translate(volume, reverse=reverse, **options)

    def translate(self, volume: Volume, reverse: bool = False, overlap: float | None = None,
                  sw_batch_size: int | None = None, progress: Progress | None = None,
                  precision: str | None = None, tiling: str = "auto") -> Volume:
        """F (``reverse=False``) or G applied to ``volume``, in the volume's own units.

        ``tiling``: ``auto`` runs the network with its frozen norms in a few large tiles
        when the checkpoint holds their statistics (one evaluation per voxel plus the halo;
        the result does not depend on the tiles), else in blended windows; ``windows``
        always runs blended windows with instance norms, as checkpoints without statistics
        do. ``overlap``, ``sw_batch_size`` and ``precision`` default to the card's
        ``[infer]`` (``overlap`` and ``sw_batch_size`` are for windows).
        """
        if tiling not in ("auto", "windows"):
            raise InputError(f"tiling must be auto or windows, got {tiling!r}")
        data = self.card.data
        self._check_input(volume, reverse)
        source, affine = volume.array, volume.affine  # the input, in its units
        if data.refines_grid and not reverse:
            # interpolated in the input's units, then windowed: as training makes its inputs
            source = upsample(source, data.sr_factors, data.sr_upsample)
            affine = zoom_affine(volume.affine, data.sr_factors)
        stats_in, stats_out = statistics_of(data, reverse)
        image = normalise(source, data.intensity, data.window, stats_in)
        if tiling == "auto" and reverse in self.tiled:
            out = self._tiles(reverse, image, progress, precision, held=2 * source.nbytes)
        else:
            net = self.model.reverse if reverse else self.model
            out = self._windows(net, image, overlap, sw_batch_size, progress, precision)
        del image
        if data.refines_grid and reverse:
            out = downsample(out, data.sr_factors)
            source = downsample(source, data.sr_factors)
            affine = zoom_affine(volume.affine, [1.0 / f for f in data.sr_factors])
        if stats_out is not None:  # an exact affine inverse: nothing to clip
            out = from_zscores(out, stats_out)
        else:
            out = keep_outside_window(denormalise(np.clip(out, -1.0, 1.0), data.window),
                                      source, data.window)
        self._check_output(out, volume)
        meta = {k: v for k, v in volume.meta.items() if k in ("units", "modality")}
        return Volume(out, affine, source=volume.source, meta=meta)


    def _tiles(self, reverse: bool, image: np.ndarray, progress: Progress | None,
               precision: str | None, held: int) -> np.ndarray:
        """The frozen network of one direction over ``image`` in the fewest voxels the
        memory allows (``revmed.tiles``)."""
        frozen, halo = self.tiled[reverse]
        net = frozen.reverse if reverse else frozen
        per_voxel = frozen.inference_bytes_per_voxel()
        slabs = slab_axis(self.card.patch_size)
        tiles = plan_tiles(image.shape[1:], halo, tile_voxels(per_voxel, self.device, held),
                           align=frozen.stride, slabs=slabs)
        return tiled_predict(net, image, tiles, self.device,
                             inference_precision(precision or self.card.infer.precision,
                                                 self.device),
                             self.tiles_channels_last, progress, slabs=slabs)


class Segmenter(Predictor):
    """A trained segmentation network: volume in, label map out (same grid), labelled by the
    checkpoint's label set (``revmed.regions``; BraTS for older checkpoints)."""

    tasks = ("seg",)
    output_dtype = np.uint8

    def predict(self, volume: Volume, reverse: bool = False, **options) -> Volume:
        if reverse:
            raise InputError(f"{self.source}: a segmentation model has no reverse direction")
        return self.segment(volume, **options)

    def segment(self, volume: Volume, overlap: float | None = None,
                sw_batch_size: int | None = None, progress: Progress | None = None,
                precision: str | None = None, tiling: str = "auto") -> Volume:
        """Label map ``(1, I, J, K)`` uint8 of ``volume`` ``(C, I, J, K)``, in its geometry.
        Segmentation networks normalise over what they see, so they always run in blended
        windows (``tiling`` is accepted for the common interface)."""
        self._check_input(volume)
        image = normalise(volume.array, self.card.data.intensity, self.card.data.window)
        logits = self._windows(self.model, image, overlap, sw_batch_size, progress, precision)
        self._check_output(logits, volume)
        labels = self.card.data.labels.to_labels(logits)
        return Volume(labels.astype(np.float32), volume.affine, source=volume.source,
                      meta={"units": "label"})


#: The predictor of each preset task.
PREDICTORS: dict[str, type[Predictor]] = {task: cls for cls in (Translator, Segmenter)
                                          for task in cls.tasks}


def load_predictor(path: str | os.PathLike, device: str | torch.device = "cpu",
                   compile: bool | None = None,  # noqa: A002
                   channels_last: bool | None = None) -> Predictor:
    """The ``Translator`` or ``Segmenter`` for the checkpoint at ``path`` (``compile`` and
    ``channels_last``: see ``Predictor.from_checkpoint``)."""
    checkpoint = load_checkpoint(path)
    predictor = PREDICTORS.get(checkpoint.card.task)
    if predictor is None:
        raise InputError(f"{path}: no inference for task {checkpoint.card.task!r}")
    return predictor.from_checkpoint(checkpoint, path, device, compile, channels_last)


def newest_checkpoint(runs_dir: str | os.PathLike = "runs") -> Path | None:
    """The most recently written ``best.pt`` under ``runs_dir/*/``, if any."""
    found = sorted(Path(runs_dir).glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None
