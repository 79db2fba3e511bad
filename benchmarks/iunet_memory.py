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
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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
    parser.add_argument("--json", type=Path, default=_common.RESULTS / "iunet_memory.json")
    parser.add_argument("--worker", nargs=3, metavar=("WIDTH", "BLOCKS", "SAVING"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

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
