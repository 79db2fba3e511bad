"""Throughput of a preset's generator, with frozen norms, against the size of the block it runs
on: why large tiles are not free on a CPU.

The generator is the preset's, built from its seed and not trained, its instance norms frozen
at statistics measured on a noise patch (as tiled inference runs it). Each block shape runs
twice after a warm-up; the faster run counts. Also: the same network with the frozen norms
removed, to see what they cost.

    python benchmarks/block_throughput.py                      # chestct-da, fp32
    python benchmarks/block_throughput.py --precision bf16 --channels-last
"""

from __future__ import annotations

import argparse
import copy
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="chestct-da")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from revmed.runtime import to_channels_last

    net = frozen_generator(args.preset)
    bare = without_norms(net)
    if args.channels_last:
        to_channels_last(net)
        to_channels_last(bare)
    rows = []
    for shape in SHAPES:
        rows.append(["x".join(map(str, shape)),
                     f"{rate(net, shape, args.precision, args.channels_last):.2f}",
                     f"{rate(bare, shape, args.precision, args.channels_last):.2f}"])
    print(f"\n{args.preset}, {args.precision}{', channels-last' if args.channels_last else ''}, "
          f"{args.threads} thread(s), {_common.cpu_name()}:\n")
    print(_common.markdown_table(["block", "M voxels/s (frozen norms)",
                                  "M voxels/s (norms removed)"], rows))


if __name__ == "__main__":
    main()
