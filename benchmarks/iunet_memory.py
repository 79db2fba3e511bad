"""Memory of one iUNet training step against blocks per scale, with and without memory saving.

The model is revmed's IUNet3D as the segmentation presets build it (4 channels in, 3 logits
out; ``--scales`` levels), trained for one step on one random patch: forward, BCE-with-logits
against a random binary target, backward (no optimizer update). Every configuration runs in a
fresh subprocess. After a warm-up step on the same architecture with one block per scale (it
sets up what is done once per layer shape), the worker builds the measured model, records the
process's resident memory, resets its high-water mark (/proc/self/clear_refs), runs the step
and reads the new high-water mark (VmHWM): the step's peak above the memory the model and batch
already hold. On CUDA it uses torch.cuda.max_memory_allocated instead. The deterministic figure
is the bytes autograd saves for backward during the forward pass (parameters excluded).

    python benchmarks/iunet_memory.py                 # blow-up 8 and 16, 1/2/4 blocks, 48^3
    python benchmarks/iunet_memory.py --quick         # blow-up 8, 1 and 2 blocks, 32^3
    python benchmarks/iunet_memory.py --paper         # the paper's BraTS scale (below)
    python benchmarks/iunet_memory.py --paper --crop 80 96 64   # the same, 1/8 of the voxels

``--paper``: the memory side of the iUNet paper's BraTS experiment (Etmann et al. 2020, section
4.2): one training step at the paper's scale, 4 MRI modalities in, 3 logits out, batch 1, a
160 x 192 x 128 crop, 5 resolution levels, against the paper's baseline U-Net:

- revmed's IUNet3D at blow-up 16 and 32 (2 couplings per scale and side, as in the paper),
  each with memory saving on (the default) and off;
- the baseline, MONAI's ``BasicUNet(spatial_dims=3, in_channels=4, out_channels=3,
  features=(24, 48, 96, 192, 384, 24))``, MONAI's network as it stands, not a re-implementation.
  It is the classic 3D U-Net of Cicek et al. (2016) in the layout the paper describes: two
  3x3x3 convolutions per level, each followed by instance norm (affine) and leaky ReLU (slope
  0.1); 5 levels with 4 max-poolings (2x2x2); blow-up 24 at full resolution, doubled at each
  downsampling (24, 48, 96, 192, 384). The decoder upsamples by 2x2x2 transposed convolutions
  (to half the channels: 384 -> 192, 192 -> 96, 96 -> 48; the last one keeps 48), concatenates
  the encoder's feature map of the same level and applies two convolutions (to 192, 96, 48 and
  24 channels); a 1x1x1 convolution gives the 3 logits. Differences from Cicek et al.: instance
  norm instead of batch norm, leaky ReLU instead of ReLU, channels doubled at each level rather
  than within each encoder block, padded convolutions.

Same step, loss, subprocess-per-configuration and counters as the default mode. The warm-up
differs: at this size a warm-up step on a 1-block model of the same architecture would cost
about as much again as the measured step (for the U-Net there is no smaller same-architecture
model at all), so each worker instead runs one warm-up step of the measured model itself on a
32^3 crop (under 1 % of the voxels) and drops its gradients before measuring. That sets up the
process-wide, once-only state (thread pool, lazily initialised kernels and autograd engine);
what depends on the crop's size (oneDNN's per-shape primitives and scratch buffers) is set up
in the measured step and counts in it, as it would in the first step of a training run (at an
80 x 96 x 64 crop a second step in the same process peaked 0-4 % lower than the first). A worker
that fails (out of memory included: it asks the kernel's OOM killer to pick it first) shows as
failed in the table. The model's size is given in MiB of float32 parameters and as a count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import _common


def _step(model, x, target) -> None:
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
    loss.backward()


def worker(width: int, blocks: int, saving: bool, scales: int, patch: int,
           device: str) -> dict:
    from revmed.models import IUNet3D

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, patch, patch, patch, generator=gen).to(device)
    target = (torch.rand(1, 3, patch, patch, patch, generator=gen) > 0.5).float().to(device)

    def build(b):
        torch.manual_seed(0)
        return IUNet3D(4, 3, channels=width, scales=scales, blocks_per_scale=b,
                       memory_saving=saving).to(device)

    _step(build(1), x, target)
    model = build(blocks)
    step, saved = _common.step_memory_mib(
        model, torch.nn.functional.binary_cross_entropy_with_logits, x, target, device)
    return {"width": width, "blocks": blocks, "memory_saving": saving,
            "model_mib": _common.model_mib(model), "step_mib": step, "saved_mib": saved}


#: The paper's BraTS configurations: (model, channel blow-up, memory saving); None: not applicable.
PAPER_CONFIGS = [("iunet", 16, True), ("iunet", 16, False), ("iunet", 32, True),
                 ("iunet", 32, False), ("unet", 24, None)]
PAPER_CROP = (160, 192, 128)
PAPER_SCALES = 5
#: The U-Net's feature maps per level (5 levels, 4 downsamplings) and after the last upsampling.
UNET_FEATURES = (24, 48, 96, 192, 384, 24)


def build_paper_model(model: str, width: int, saving: bool | None) -> torch.nn.Module:
    torch.manual_seed(0)
    if model == "iunet":
        from revmed.models import IUNet3D
        return IUNet3D(4, 3, channels=width, scales=PAPER_SCALES, blocks_per_scale=2,
                       memory_saving=bool(saving))
    from monai.networks.nets import BasicUNet
    assert width == UNET_FEATURES[0]
    return BasicUNet(spatial_dims=3, in_channels=4, out_channels=3, features=UNET_FEATURES)


def paper_worker(model_name: str, width: int, saving: bool | None, crop: list[int],
                 device: str) -> dict:
    try:  # if the machine runs out of memory, let the kernel end this process, not another
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, *crop, generator=gen).to(device)
    target = (torch.rand(1, 3, *crop, generator=gen) > 0.5).float().to(device)
    model = build_paper_model(model_name, width, saving).to(device)
    small = torch.randn(1, 4, 32, 32, 32, generator=gen).to(device)
    _step(model, small, (torch.rand(1, 3, 32, 32, 32, generator=gen) > 0.5).float().to(device))
    for p in model.parameters():
        p.grad = None
    del small
    step, saved = _common.step_memory_mib(
        model, torch.nn.functional.binary_cross_entropy_with_logits, x, target, device)
    return {"model": model_name, "width": width, "memory_saving": saving,
            "params": sum(p.numel() for p in model.parameters()),
            "model_mib": _common.model_mib(model), "step_mib": step, "saved_mib": saved}


def _failure(done: subprocess.CompletedProcess) -> str:
    if done.returncode < 0:
        return f"killed by signal {-done.returncode}" + (" (out of memory?)"
                                                         if done.returncode == -9 else "")
    return (done.stderr.strip().splitlines() or ["(no output)"])[-1]


def run_paper_process(args, model: str, width: int, saving: bool | None) -> dict:
    cmd = [sys.executable, __file__, "--paper-worker", model, str(width),
           "-" if saving is None else str(int(saving)), "--crop", *map(str, args.crop),
           "--device", args.device]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 << 10)}  # as in run_worker_process
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"model": model, "width": width, "memory_saving": saving,
                "error": _failure(done), "seconds": seconds}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "seconds": seconds}


def paper(args) -> None:
    crop = "x".join(map(str, args.crop))
    results = []
    for model, width, saving in PAPER_CONFIGS:
        r = run_paper_process(args, model, width, saving)
        results.append(r)
        print(f"  {model} blow-up {width:3d} saving {saving!s:5} "
              + (r["error"] if "error" in r else f"step {r['step_mib']:.0f} MiB")
              + f" ({r['seconds']:.0f} s)", file=sys.stderr, flush=True)

    unet = next((r for r in results if r["model"] == "unet" and "error" not in r), None)
    unit = "max_memory_allocated" if args.device == "cuda" else "peak RSS"
    header = ["model", "blow-up", "memory saving", "params", "params MiB", "step MiB",
              "saved MiB", "step / U-Net"]
    rows = []
    for r in results:
        name = "iUNet3D" if r["model"] == "iunet" else "U-Net (MONAI BasicUNet)"
        saving = "–" if r["memory_saving"] is None else ("on" if r["memory_saving"] else "off")
        if "error" in r:
            rows.append([name, r["width"], saving, "–", "–", "failed", "–", "–"])
            continue
        ratio = f"{r['step_mib'] / unet['step_mib']:.2f}" if unet else "–"
        rows.append([name, r["width"], saving, f"{r['params']:,}", f"{r['model_mib']:.2f}",
                     f"{r['step_mib']:.0f}", f"{r['saved_mib']:.0f}", ratio])
    print(f"\nOne training step at the iUNet paper's BraTS scale: 4 -> 3 channels, "
          f"{PAPER_SCALES} scales, batch 1, a {crop} crop, {args.device}, "
          f"{torch.get_num_threads()} threads ({unit} above the model and batch; saved = "
          f"tensors saved for backward):\n")
    print(_common.markdown_table(header, rows))
    for r in results:
        if "error" in r:
            print(f"\n{r['model']} blow-up {r['width']}, saving {r['memory_saving']} "
                  f"failed: {r['error']}")
    _common.write_json(args.json, {
        "benchmark": "iunet_memory_paper", "scales": PAPER_SCALES, "crop": args.crop,
        "batch": 1, "unet_features": UNET_FEATURES,
        "machine": _common.machine(args.device), "results": results})
    print(f"\nJSON: {args.json}")


def run_worker_process(args, width: int, blocks: int, saving: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(width), str(blocks), str(int(saving)),
           "--scales", str(args.scales), "--patch", str(args.patch), "--device", args.device]
    # Allocations of 64 KiB or more get their own mapping, unmapped when freed: the resident
    # size then follows the live tensors rather than malloc's cache. The coarse scales' feature
    # maps are smaller than 1 MiB (64 x 12^3 floats at 48^3); with benchmarks/memory.py's 1 MiB
    # threshold they stay in malloc's heap, whose high-water mark then grows with the number of
    # blocks although the live tensors do not (measured: 143 -> 188 MiB for 1 -> 4 blocks at
    # blow-up 16 with memory saving; 139 -> 140 MiB with 64 KiB).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 << 10)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"width": width, "blocks": blocks, "memory_saving": saving, "error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16],
                        help="channel blow-ups (multiples of 4)")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4],
                        help="coupling blocks per scale")
    parser.add_argument("--scales", type=int, default=3)
    parser.add_argument("--patch", type=int, default=48, help="edge of the cubic patch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="blow-up 8, 1 and 2 blocks, 32^3")
    parser.add_argument("--paper", action="store_true",
                        help="the iUNet paper's BraTS scale: iUNet blow-up 16 and 32 against "
                             "a U-Net of blow-up 24, 5 scales, one 160x192x128 crop")
    parser.add_argument("--crop", type=int, nargs=3, default=list(PAPER_CROP),
                        metavar=("D", "H", "W"),
                        help="--paper only: the crop (multiples of 16)")
    parser.add_argument("--json", type=Path, default=None,
                        help="default: results/iunet_memory.json, with --paper "
                             "results/iunet_memory_paper.json")
    parser.add_argument("--worker", nargs=3, metavar=("WIDTH", "BLOCKS", "SAVING"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--paper-worker", nargs=3, metavar=("MODEL", "WIDTH", "SAVING"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.paper_worker:
        model, width, saving = args.paper_worker
        print(json.dumps(paper_worker(model, int(width), None if saving == "-" else
                                      bool(int(saving)), args.crop, args.device)))
        return
    if args.json is None:
        args.json = _common.RESULTS / ("iunet_memory_paper.json" if args.paper
                                       else "iunet_memory.json")
    if args.paper:
        paper(args)
        return
    if args.worker:
        width, blocks, saving = (int(v) for v in args.worker)
        print(json.dumps(worker(width, blocks, bool(saving), args.scales, args.patch,
                                args.device)))
        return
    if args.quick:
        args.widths, args.blocks, args.patch = [8], [1, 2], 32

    results = []
    for width in args.widths:
        for blocks in args.blocks:
            for saving in (True, False):
                r = run_worker_process(args, width, blocks, saving)
                results.append(r)
                print(f"  blow-up {width:3d} blocks {blocks} saving {saving!s:5} "
                      + (r["error"] if "error" in r else f"step {r['step_mib']:.0f} MiB"),
                      file=sys.stderr, flush=True)

    by = {(r["width"], r["blocks"], r["memory_saving"]): r for r in results}
    unit = "max_memory_allocated" if args.device == "cuda" else "peak RSS"
    header = ["blow-up", "blocks/scale", "params MiB", "saving: step MiB", "saving: saved MiB",
              "plain: step MiB", "plain: saved MiB"]
    rows = []
    for width in args.widths:
        for blocks in args.blocks:
            on, off = by[(width, blocks, True)], by[(width, blocks, False)]
            model = on.get("model_mib", off.get("model_mib"))
            rows.append([width, blocks, "–" if model is None else f"{model:.2f}",
                         *(f"{r[key]:.1f}" if key in r else "–"
                           for r in (on, off) for key in ("step_mib", "saved_mib"))])
    print(f"\niUNet3D training step, 4 -> 3 channels, {args.scales} scales, one "
          f"{args.patch}^3 patch, {args.device}, {torch.get_num_threads()} threads "
          f"({unit} above the model and batch; saved = tensors saved for backward):\n")
    print(_common.markdown_table(header, rows))
    for r in results:
        if "error" in r:
            print(f"\nblow-up {r['width']}, {r['blocks']} blocks, saving {r['memory_saving']} "
                  f"failed: {r['error']}")
    _common.write_json(args.json, {
        "benchmark": "iunet_memory", "scales": args.scales, "patch": args.patch,
        "machine": _common.machine(args.device), "results": results})
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
