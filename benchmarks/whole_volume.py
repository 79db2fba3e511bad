"""Whole-volume inference time: one CT of 512 x 512 x 300 output voxels through ``revmed infer``'s
own code path (``revmed.inference.Translator.translate``), today's way and the tiled way side by
side in one process.

The network is the preset's, built from the preset's seed and not trained: inference time does
not depend on the weights. Its normalisation statistics (what training measures at each
epoch's end) are measured on a noise patch, which is enough for timing. The input is random HU
noise on the grid that gives the output grid: the output grid itself for kernel adaptation
(chestct-da), the output divided by the preset's factors for super-resolution (chestct-sr:
256 x 256 x 75 in, refined by 2 x 2 x 4).

Ways (``--ways``): ``windows`` runs MONAI's sliding windows of the preset's patch size at its
overlap with Gaussian blending and per-window instance norms (what checkpoints without
statistics, and every checkpoint before tiling, run); ``tiles`` runs the network with frozen
norms in the few large tiles ``revmed.inference.tiles`` plans from the free memory, as
``revmed infer`` does (on the CPU: channels-last, with the fused convolutions of
``revmed.inference.fused``);
``tiles-unfused`` the same tiles channels-last without the fusion; ``tiles-contiguous`` the
same tiles as they ran before either (contiguous order, nothing fused). Each way runs at each
``--precisions``. Timed: the whole ``translate`` call (normalisation, grid refinement, the
network, back to HU), wall clock, after a warm-up translation of a small volume. Also
reported: voxel evaluations per output voxel (the voxels the network is run on over the output
voxels), the peak memory (the process's resident high-water mark, reset before each way; on
CUDA also ``torch.cuda.max_memory_allocated``), and the largest |HU| difference from the same
way at the first precision (bf16 against fp32).

    python benchmarks/whole_volume.py                                 # chestct-da, 512x512x300
    python benchmarks/whole_volume.py --preset chestct-sr
    python benchmarks/whole_volume.py --ways tiles --precisions fp32,bf16
    python benchmarks/whole_volume.py --ways tiles,tiles@23,tiles@21 --precisions fp32
    python benchmarks/whole_volume.py --ways tiles-contiguous,tiles-unfused,tiles --precisions fp32
    python benchmarks/whole_volume.py --shape 128,128,64 --quick      # a smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import _common

def build_translator(preset, device: torch.device, channels_last: bool | None, compile_: bool):
    """``(translator, checkpoint)``: a ``Translator`` for ``preset``'s untrained generator
    (seeded) on ``device``, with normalisation statistics measured on a noise patch, made the
    way ``revmed infer`` makes one from a checkpoint."""
    from revmed.checkpoint import Checkpoint, ModelCard
    from revmed.inference import Translator
    from revmed.nn.norm_statistics import collect_norm_statistics

    torch.manual_seed(preset.train.seed)
    card = ModelCard.of(preset)
    net = card.build().eval()
    noise = [torch.rand(1, card.data.in_channels, *card.patch_size) * 2 - 1]
    statistics = {"forward": collect_norm_statistics(net, net, noise),
                  "reverse": collect_norm_statistics(net, net.reverse, noise)}
    checkpoint = Checkpoint(card, preset, {"generator": net.state_dict(),
                                           "norm_statistics": statistics})
    return Translator.from_checkpoint(checkpoint, f"untrained {preset.name}", device,
                                      compile=compile_, channels_last=channels_last), checkpoint


def unfused(translator, checkpoint, channels_last: bool):
    """A copy of ``translator`` whose tiles run the frozen network as built, nothing fused, in
    channels-last order or not: ``tiles-unfused`` and ``tiles-contiguous``."""
    import copy

    from revmed.inference.predictor import frozen_directions
    from revmed.runtime import prepare

    model = checkpoint.card.build()
    model.load_state_dict(checkpoint.state["generator"])
    plain = copy.copy(translator)
    plain.tiled = {reverse: (prepare(net.eval(), translator.device, channels_last), halo)
                   for reverse, (net, halo) in
                   frozen_directions(model, checkpoint, translator.source).items()}
    plain.tiles_channels_last = channels_last
    return plain


def convolution_seconds(dtype: torch.dtype) -> float:
    """Seconds of one 16-channel 3x3x3 convolution of a 32^3 volume in ``dtype`` on the CPU,
    the faster of three."""
    x = torch.rand(1, 16, 34, 34, 34, dtype=dtype)
    conv = torch.nn.Conv3d(16, 16, 3).to(dtype)
    times = []
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - start)
    return min(times)


def noise_volume(shape: list[int], spacing: list[float], seed: int = 0):
    from revmed.io import Volume, make_affine

    rng = np.random.default_rng(seed)
    array = rng.uniform(-1000.0, 400.0, (1, *shape)).astype(np.float32)
    return Volume(array, make_affine(spacing), source="noise", meta={"units": "HU"})


def tile_cap(way: str):
    """``tiles@N``: a context in which tiles read at most 2^N voxels
    (``revmed.inference.tiles.MAX_TILE_VOXELS``); plain ``tiles`` and ``windows`` keep the
    default."""
    import contextlib

    from revmed.inference import tiles

    if "@" not in way:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def capped():
        default = tiles.MAX_TILE_VOXELS
        tiles.MAX_TILE_VOXELS = 2 ** int(way.split("@", 1)[1])
        try:
            yield
        finally:
            tiles.MAX_TILE_VOXELS = default
    return capped()


def evaluations(translator, way: str, volume, out_shape, overlap: float) -> float:
    """Voxels the network runs on per output voxel for ``way``."""
    from revmed.inference.tiles import plan_tiles, tile_voxels
    from revmed.inference.windows import window_count

    if way == "windows":
        patch = translator.card.patch_size
        return window_count(out_shape, patch, overlap) * math.prod(patch) / math.prod(out_shape)
    frozen, halo = translator.tiled[False]
    held = 2 * math.prod(out_shape) * 4 * volume.channels
    tiles = plan_tiles(out_shape, halo, tile_voxels(frozen.inference_bytes_per_voxel(),
                                                    translator.device, held), frozen.stride)
    read = sum(math.prod(s.stop - s.start for s in tile.source) for tile in tiles)
    return read / math.prod(out_shape)


def measure(translator, way: str, precision: str, volume, device, overlap: float,
            sw_batch: int) -> tuple[dict, np.ndarray]:
    """One timed translation of ``volume``: its row and its output."""
    options = ({"tiling": "windows", "overlap": overlap, "sw_batch_size": sw_batch}
               if way == "windows" else {})
    patch = translator.card.patch_size
    factors = translator.card.data.sr_factors
    warm = noise_volume([max(1, p // f) for p, f in zip(patch, factors)], [1.0, 1.0, 1.0], 1)
    translator.translate(warm, precision=precision, **options)  # kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    gc.collect()
    _common.reset_peak_rss()
    start = time.perf_counter()
    result = translator.translate(volume, precision=precision, **options)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert np.isfinite(result.array).all()
    row = {"way": way, "precision": precision, "seconds": seconds,
           "evaluations_per_voxel": evaluations(translator, way, volume, list(result.shape),
                                                overlap),
           "peak_rss_gib": (_common.status_kib("VmHWM") or 0) / 2**20,
           "cuda_peak_gib": (torch.cuda.max_memory_allocated() / 2**30
                             if device.type == "cuda" else None)}
    return row, result.array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="chestct-da")
    parser.add_argument("--shape", default="512,512,300", help="output grid I,J,K")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--ways", default="windows,tiles",
                        help="comma-separated: windows, tiles, tiles-unfused, tiles-contiguous; "
                             "any tiles way with @N: tiles of at most 2^N voxels instead of "
                             "revmed.inference.tiles.MAX_TILE_VOXELS")
    parser.add_argument("--channels-last", action="store_true",
                        help="windows (and tiles) in channels-last order")
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

    preset = config.load_preset(args.preset)
    device = torch.device(args.device)
    out_shape = [int(n) for n in args.shape.split(",")]
    factors = list(preset.data.sr_factors)
    if any(n % f for n, f in zip(out_shape, factors)):
        raise SystemExit(f"--shape {args.shape} is not divisible by the factors {factors}")
    in_shape = [n // f for n, f in zip(out_shape, factors)]
    overlap = 0.25 if args.quick else preset.infer.overlap
    sw_batch = args.sw_batch_size or preset.infer.sw_batch_size
    translator, checkpoint = build_translator(preset, device, args.channels_last or None,
                                              args.compile)
    translators = {"tiles-unfused": unfused(translator, checkpoint, True),
                   "tiles-contiguous": unfused(translator, checkpoint, False)}
    volume = noise_volume(in_shape, [0.7 * f for f in factors])
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if device.type == "cpu":
        from revmed.runtime import DTYPES, onednn_supports

        dropped = [p for p in precisions if not onednn_supports(DTYPES[p])]
        for name in dropped:  # revmed runs these in fp32 here (runtime.inference_precision)
            slow, fast = convolution_seconds(DTYPES[name]), convolution_seconds(torch.float32)
            print(f"skipped {name}: this CPU has no oneDNN {name} convolutions; one 16-channel "
                  f"3x3x3 convolution of 32^3 voxels takes {slow:.3f} s in {name} (PyTorch's "
                  f"reference path) against {fast:.4f} s in fp32, {slow / fast:.0f}x")
        precisions = [p for p in precisions if p not in dropped]
    rows = []
    first_way: dict[str, np.ndarray] = {}  # per precision, the first tiled way's output
    for way in [w.strip() for w in args.ways.split(",") if w.strip()]:
        first = None
        for precision in precisions:
            with tile_cap(way):
                row, out = measure(translators.get(way.split("@")[0], translator), way,
                                   precision, volume, device, overlap, sw_batch)
            if first is None:
                first = out
            row["max_abs_hu_vs_first"] = float(np.abs(out - first).max())
            if way != "windows":  # the tiled ways compute one function; windows another
                reference = first_way.setdefault(precision, out)
                row["max_abs_hu_vs_first_tiles"] = float(np.abs(out - reference).max())
                del reference
            del out
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else _common.cpu_name()
    threads = f", {torch.get_num_threads()} thread(s)" if device.type == "cpu" else ""
    print(f"\n{args.preset}: {'x'.join(map(str, in_shape))} in -> "
          f"{'x'.join(map(str, out_shape))} out ({math.prod(out_shape) / 1e6:.1f} M voxels); "
          f"windows: {'x'.join(map(str, translator.card.patch_size))} at overlap {overlap}, "
          f"batch {sw_batch}; tiles: halo {translator.tiled[False][1]}"
          f"{', channels-last' if args.channels_last else ''}"
          f"{', compiled' if args.compile else ''}; {args.device}{threads}, {name}:\n")
    base = rows[0]["seconds"]
    print(_common.markdown_table(
        ["way", "precision", "seconds", "speed-up", "evaluations / voxel", "peak RSS GiB",
         "CUDA peak GiB", "max abs HU from the way's first precision",
         "max abs HU from the first tiled way"],
        [[r["way"], r["precision"], f"{r['seconds']:.1f}", f"{base / r['seconds']:.2f}x",
          f"{r['evaluations_per_voxel']:.2f}", f"{r['peak_rss_gib']:.2f}",
          "-" if r["cuda_peak_gib"] is None else f"{r['cuda_peak_gib']:.2f}",
          f"{r['max_abs_hu_vs_first']:.1f}",
          f"{r['max_abs_hu_vs_first_tiles']:.3f}" if "max_abs_hu_vs_first_tiles" in r else "-"]
         for r in rows]))
    result = {"preset": args.preset, "input": in_shape, "output": out_shape,
              "patch": translator.card.patch_size, "overlap": overlap, "sw_batch_size": sw_batch,
              "channels_last": args.channels_last, "compile": args.compile, "rows": rows,
              "machine": _common.machine(args.device)}
    _common.write_json(args.json, result)
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
