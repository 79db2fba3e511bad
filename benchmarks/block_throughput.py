"""Throughput of a preset's generator, with frozen norms, against the size of the block it runs
on: why large tiles are not free on a CPU.

The generator is the preset's, built from its seed and not trained, its instance norms frozen
at statistics measured on a noise patch (as tiled inference runs it). Each block shape runs
twice after a warm-up; the faster run counts. Also: the same network with the frozen norms
removed, to see what they cost.

    python benchmarks/block_throughput.py                      # chestct-da, fp32
    python benchmarks/block_throughput.py --precision bf16 --channels-last
    python benchmarks/block_throughput.py --channels-last --fused   # as revmed infer's tiles
    python benchmarks/block_throughput.py --tile 128,256,256 --blocks 32,48,64
                        # one 2^23-voxel tile as inference runs it, then with each coupling's
                        # F and G run in blocks of 32^3, 48^3, 64^3 (Blockwise, below)
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import time

import torch
from torch import nn

import _common

SHAPES = [(32, 64, 64), (40, 40, 40), (64, 64, 64), (72, 72, 72), (64, 64, 128), (96, 96, 96),
          (128, 128, 128), (160, 160, 160), (256, 256, 64)]


def frozen_generator(preset_name: str):
    from revmed import config
    from revmed.checkpoint import ModelCard
    from revmed.nn.norm_statistics import collect_norm_statistics, freeze_norms

    preset = config.load_preset(preset_name)
    torch.manual_seed(preset.train.seed)
    net = ModelCard.of(preset).build().eval()
    noise = [torch.rand(1, preset.data.in_channels, 32, 32, 32) * 2 - 1]
    return freeze_norms(net, collect_norm_statistics(net, net, noise))


def without_norms(net: nn.Module) -> nn.Module:
    from revmed.nn.norm_statistics import FixedNorm3d

    bare = copy.deepcopy(net)
    for module in list(bare.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, FixedNorm3d):
                setattr(module, name, nn.Identity())
    return bare


def rate(net: nn.Module, shape, precision: str, channels_last: bool) -> float:
    """Million input voxels per second, the faster of two runs."""
    from revmed.runtime import as_channels_last, autocast

    x = torch.rand(1, 1, *shape) * 2 - 1
    if channels_last:
        x = as_channels_last(x)
    times = []
    with torch.no_grad(), autocast(precision, torch.device("cpu")):
        net(x[..., :16, :16, :16])
        for _ in range(2):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return math.prod(shape) / min(times) / 1e6


# --- an experiment: each coupling's F and G in cache-sized blocks inside a tile ---------------
# The network runs about twice as fast per voxel on blocks up to 64^3 as on larger ones. Running
# each sub-network of stride 1 block by block (its input widened by its own reach of 2 voxels,
# only the block kept) gives the same result as one pass; whether it is faster is what
# ``--tile`` measures. It was not (docs/benchmarks.md), so this lives here, not in revmed.

class Blockwise(nn.Module):
    """``inner`` evaluated in blocks of at most ``block`` output voxels per axis.

    ``inner`` maps ``(B, C, D, H, W)`` to ``(B, C', D, H, W)`` (stride 1, same size) and its
    output at a voxel depends only on inputs within ``reach`` voxels along each axis; padding
    it does at the faces of what it is given then only reaches the border that is cropped.
    Inputs no larger than ``block`` along every axis run in one piece.
    """

    def __init__(self, inner: nn.Module, block: int, reach: int | None = None) -> None:
        super().__init__()
        if block < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        if reach is None:
            measured, scale = _conv_reach(inner)
            if scale != 1:
                raise ValueError("Blockwise needs a sub-network of stride 1")
            reach = math.ceil(measured)
        self.inner, self.block, self.reach = inner, block, reach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        if all(n <= self.block for n in size):
            return self.inner(x)
        out = None
        starts = [range(0, n, self.block) for n in size]
        for corner in itertools.product(*starts):
            stops = [min(c + self.block, n) for c, n in zip(corner, size, strict=True)]
            lows = [max(c - self.reach, 0) for c in corner]
            highs = [min(s + self.reach, n) for s, n in zip(stops, size, strict=True)]
            piece = self.inner(x[(..., *(slice(lo, hi) for lo, hi in zip(lows, highs,
                                                                          strict=True)))])
            if out is None:
                out = x.new_empty((x.shape[0], piece.shape[1], *size),
                                  dtype=piece.dtype).contiguous(memory_format=_format(x))
            keep = tuple(slice(c - lo, s - lo) for c, s, lo in zip(corner, stops, lows,
                                                                      strict=True))
            out[(..., *(slice(c, s) for c, s in zip(corner, stops, strict=True)))] = \
                piece[(..., *keep)]
        return out

    def extra_repr(self) -> str:
        return f"block={self.block}, reach={self.reach}"


def _format(x: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last_3d if x.dim() == 5 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last_3d)
            else torch.contiguous_format)


def blockwise_couplings(model: nn.Module, block: int) -> nn.Module:
    """``model`` with the F and G of every additive coupling in it wrapped in ``Blockwise``
    (in place; returned for chaining). Only for inference with frozen norms: an instance norm
    that measures what it sees would see each block alone."""
    from revmed.nn.coupling import AdditiveCoupling
    for module in list(model.modules()):
        if isinstance(module, AdditiveCoupling):
            for name in ("f", "g"):
                sub = getattr(module, name)
                if not isinstance(sub, Blockwise):
                    setattr(module, name, Blockwise(sub, block))
    return model


def _conv_reach(module):
    from revmed.nn.reach import conv_reach

    return conv_reach(module)


def tile_rows(net: nn.Module, tile, blocks, precision: str, channels_last: bool) -> list:
    """Rate on one tile: the network as it is, then with blockwise couplings per block size;
    also the largest difference of each from the plain output (they must agree)."""
    from revmed.runtime import autocast

    x = torch.rand(1, 1, *tile) * 2 - 1
    with torch.no_grad(), autocast(precision, torch.device("cpu")):
        reference = net(x).float()
    rows = [["as is", f"{rate(net, tile, precision, channels_last):.2f}", "0"]]
    for block in blocks:
        wrapped = blockwise_couplings(copy.deepcopy(net), block)
        with torch.no_grad(), autocast(precision, torch.device("cpu")):
            diff = (wrapped(x).float() - reference).abs().max().item()
        rows.append([f"couplings in {block}^3 blocks",
                     f"{rate(wrapped, tile, precision, channels_last):.2f}", f"{diff:.1e}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="chestct-da")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--fused", action="store_true",
                        help="the network as revmed infer runs tiles on the CPU: norms folded, "
                             "oneDNN post-ops (revmed.inference.fused); with --channels-last, "
                             "in that order")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", default=None, help="D,H,W: time one tile instead of blocks")
    parser.add_argument("--blocks", default="32,48,64",
                        help="with --tile: block sizes for the couplings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from revmed.runtime import to_channels_last

    net = frozen_generator(args.preset)
    bare = without_norms(net)
    if args.fused:
        from revmed.inference.fused import fuse_for_inference

        net = fuse_for_inference(net, args.channels_last)
        bare = fuse_for_inference(bare, args.channels_last)
    if args.channels_last:
        to_channels_last(net)
        to_channels_last(bare)
    if args.tile:
        tile = tuple(int(v) for v in args.tile.split(","))
        rows = tile_rows(net, tile, [int(v) for v in args.blocks.split(",")], args.precision,
                         args.channels_last)
        print(f"\n{args.preset}, tile {args.tile}, {args.precision}, {args.threads} thread(s), "
              f"{_common.cpu_name()}:\n")
        print(_common.markdown_table(["way", "M voxels/s", "max abs diff"], rows))
        return
    rows = []
    for shape in SHAPES:
        rows.append(["x".join(map(str, shape)),
                     f"{rate(net, shape, args.precision, args.channels_last):.2f}",
                     f"{rate(bare, shape, args.precision, args.channels_last):.2f}"])
    print(f"\n{args.preset}, {args.precision}{', channels-last' if args.channels_last else ''}"
          f"{', fused' if args.fused else ''}, "
          f"{args.threads} thread(s), {_common.cpu_name()}:\n")
    print(_common.markdown_table(["block", "M voxels/s (frozen norms)",
                                  "M voxels/s (norms removed)"], rows))


if __name__ == "__main__":
    main()
