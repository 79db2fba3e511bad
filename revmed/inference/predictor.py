"""What every predictor is: a trained network on a device with the model card of its
checkpoint (``revmed.checkpoint``), the checks each prediction makes, and the blended windows
it runs in (``revmed.inference.windows``).

``Predictor.from_checkpoint`` also prepares, per direction, the network with its instance norms
frozen where the checkpoint holds their statistics (``frozen_directions``): such a network runs
in a few large tiles whose result does not depend on the tiling (``revmed.inference.tiles``,
docs/inference.md), fused for the CPU (``revmed.inference.fused``). ``Translator`` uses them;
the other predictors run in windows.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from revmed.checkpoint import Checkpoint, ModelCard, load_checkpoint
from revmed.errors import CheckpointError, InputError
from revmed.inference.fused import fuse_for_inference
from revmed.inference.tiles import runs_in_tiles
from revmed.inference.windows import sliding_window_predict
from revmed.io import Volume, check_finite
from revmed.models import get_family
from revmed.nn.norm_statistics import freeze_norms
from revmed.runtime import inference_precision, prepare
from revmed.sizes import require_memory, shape_text, voxel_bytes

#: ``progress(done, total)``, called as windows or tiles finish.
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
        #: checkpoints that hold normalisation statistics (``revmed.inference.tiles``)
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
    fused convolutions of ``revmed.inference.fused`` it ran a chest-CT tile 1.4x faster than the
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
