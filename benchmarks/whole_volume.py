"""Whole-volume inference time: one CT of 512 x 512 x 300 output voxels through ``revmed infer``'s
own code path (``revmed.inference.Translator.translate``).

The network is the preset's, built from the preset's seed and not trained: inference time does
not depend on the weights. The input is random HU noise on the grid that gives the output grid:
the output grid itself for kernel adaptation (chestct-da), the output divided by the
preset's factors for super-resolution (chestct-sr: 256 x 256 x 75 in, refined by 2 x 2 x 4).
Timed: the whole ``translate`` call (normalisation, grid refinement, sliding windows of the
preset's patch size with its overlap and blending, back to HU), wall clock, after a warm-up
translation of a small volume. Also reported: the windows run, the windows per second, and
the peak memory (the process's resident high-water mark; on CUDA also
``torch.cuda.max_memory_allocated``).

    python benchmarks/whole_volume.py                                 # chestct-da, 512x512x300
    python benchmarks/whole_volume.py --preset chestct-sr
    python benchmarks/whole_volume.py --shape 128,128,64 --quick      # a smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import _common


def build_translator(preset, device: torch.device, channels_last: bool, compile_: bool):
    """A ``Translator`` for ``preset``'s untrained generator (seeded) on ``device``, made the
    way ``revmed infer`` makes one from a checkpoint."""
    from revmed.checkpoint import Checkpoint, ModelCard
    from revmed.inference import Translator

    torch.manual_seed(preset.train.seed)
    card = ModelCard.of(preset)
    checkpoint = Checkpoint(card, preset, {"generator": card.build().state_dict()})
    return Translator.from_checkpoint(checkpoint, f"untrained {preset.name}", device,
                                      compile=compile_, channels_last=channels_last)


def noise_volume(shape: list[int], spacing: list[float], seed: int = 0):
    from revmed.io import Volume, make_affine

    rng = np.random.default_rng(seed)
    array = rng.uniform(-1000.0, 400.0, (1, *shape)).astype(np.float32)
    return Volume(array, make_affine(spacing), source="noise", meta={"units": "HU"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="chestct-da")
    parser.add_argument("--shape", default="512,512,300", help="output grid I,J,K")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--sw-batch-size", type=int, default=None,
                        help="windows per forward pass (default: the preset's)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="overlap 0.25 (fewer windows)")
    parser.add_argument("--json", type=Path, default=_common.RESULTS / "whole_volume.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from revmed import config
    from revmed.windows import window_count

    preset = config.load_preset(args.preset)
    device = torch.device(args.device)
    out_shape = [int(n) for n in args.shape.split(",")]
    factors = list(preset.data.sr_factors)
    if any(n % f for n, f in zip(out_shape, factors)):
        raise SystemExit(f"--shape {args.shape} is not divisible by the factors {factors}")
    in_shape = [n // f for n, f in zip(out_shape, factors)]
    overlap = 0.25 if args.quick else preset.infer.overlap
    sw_batch = args.sw_batch_size or preset.infer.sw_batch_size
    translator = build_translator(preset, device, args.channels_last, args.compile)
    patch = translator.card.patch_size
    volume = noise_volume(in_shape, [0.7 * f for f in factors])

    warm = noise_volume([max(1, p // f) for p, f in zip(patch, factors)], [1.0, 1.0, 1.0], 1)
    translator.translate(warm, overlap=overlap, sw_batch_size=sw_batch,
                         precision=args.precision)  # kernels, compilation, allocator
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _common.reset_peak_rss()
    windows = window_count(out_shape, patch, overlap)
    start = time.perf_counter()
    result = translator.translate(volume, overlap=overlap, sw_batch_size=sw_batch,
                                  precision=args.precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert list(result.shape) == out_shape and np.isfinite(result.array).all()
    peak_rss = (_common.status_kib("VmHWM") or 0) / 2**20
    row = {
        "preset": args.preset, "input": in_shape, "output": out_shape, "patch": patch,
        "overlap": overlap, "sw_batch_size": sw_batch, "precision": args.precision,
        "channels_last": args.channels_last, "compile": args.compile, "windows": windows,
        "seconds": seconds, "windows_per_s": windows / seconds, "peak_rss_gib": peak_rss,
        "cuda_peak_gib": (torch.cuda.max_memory_allocated() / 2**30
                          if device.type == "cuda" else None),
        "machine": _common.machine(args.device),
    }
    name = torch.cuda.get_device_name() if device.type == "cuda" else _common.cpu_name()
    threads = f", {torch.get_num_threads()} thread(s)" if device.type == "cpu" else ""
    print(f"\n{args.preset}: {'x'.join(map(str, in_shape))} in -> "
          f"{'x'.join(map(str, out_shape))} out ({math.prod(out_shape) / 1e6:.1f} M voxels), "
          f"{'x'.join(map(str, patch))} windows at overlap {overlap}, batch {sw_batch}, "
          f"{args.precision}{', channels-last' if args.channels_last else ''}"
          f"{', compiled' if args.compile else ''}; {args.device}{threads}, {name}:\n")
    print(_common.markdown_table(
        ["seconds", "windows", "windows/s", "peak RSS GiB", "CUDA peak GiB"],
        [[f"{seconds:.1f}", windows, f"{windows / seconds:.2f}", f"{peak_rss:.2f}",
          "-" if row["cuda_peak_gib"] is None else f"{row['cuda_peak_gib']:.2f}"]]))
    _common.write_json(args.json, row)
    print(f"\nJSON: {args.json}")
    print(json.dumps({k: row[k] for k in ("seconds", "windows", "peak_rss_gib")}))


if __name__ == "__main__":
    main()
