"""Memory of one training step against core depth, per engine (chest-CT abstract, Table 1).

Every (engine, depth) runs in a fresh subprocess. After a warm-up step on a one-block model,
the worker builds the measured model, records the process's resident memory on CPU, resets its
high-water mark (/proc/self/clear_refs), runs one training step (forward, L1 loss, backward)
and reads the new high-water mark (VmHWM): the step's peak above the memory the model and
batch already hold. On CUDA it uses torch.cuda.max_memory_allocated instead. A deterministic
figure is recorded too: the bytes autograd saves for backward during the forward pass
(torch.autograd.graph.saved_tensors_hooks; parameters excluded).

``--generator srcnn`` or ``--generator strided`` measures revmed's RevGAN generator ``F``
(``revmed.models.RevGAN3D`` with that encoder: the SRCNN-style one at full resolution, or the
strided one of the authors' chest-CT runs, whose core runs at half resolution) instead of the
generic lift / core / projection model; only the engines ``revmed`` (memory-free core) and
``naive`` (plain autograd) apply to it.

    python benchmarks/memory.py                      # 32 channels, 48^3, depths 0..32
    python benchmarks/memory.py --quick              # depths 0, 1, 4: a smoke test
    python benchmarks/memory.py --generator strided --width 64 --patch 128 --depths 0 1 2 4 8
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

DEPTHS = [0, 1, 2, 4, 8, 16, 32]


GENERATORS = ("generic", "srcnn", "strided")


def build(mode: str, depth: int, width: int, generator: str) -> torch.nn.Module:
    """The measured network: the generic model of ``_common.build_model``, or revmed's RevGAN
    generator F with the named encoder (memory-free core for ``revmed``, plain autograd for
    ``naive``)."""
    if generator == "generic":
        return _common.build_model(mode, depth, width)
    if mode not in ("revmed", "naive"):
        raise ValueError(f"--generator {generator} runs the engines revmed and naive only")
    from revmed.models import RevGAN3D

    torch.manual_seed(0)
    return RevGAN3D(1, 1, width, depth, memory_saving=mode == "revmed", encoder=generator)


def worker(mode: str, depth: int, width: int, patch: int, batch: int, device: str,
           generator: str = "generic") -> dict:
    x, target = _common.make_batch(batch, patch, device)
    # Warm-up on a one-block model of the same kind: the blocks are identical, so this sets up
    # everything done once per layer shape (oneDNN primitives, CUDA kernels) at little cost.
    _common.train_step(build(mode, min(depth, 1), width, generator).to(device), x, target)
    model = build(mode, depth, width, generator).to(device)
    step, saved = _common.step_memory_mib(model, torch.nn.functional.l1_loss, x, target, device)
    # memcnn keeps its tensors as attributes of its autograd context, which the saved-tensor
    # hooks never see.
    return {"mode": mode, "depth": depth, "model_mib": _common.model_mib(model), "step_mib": step,
            "saved_mib": None if mode == "memcnn" else saved}


def run_worker_process(args, mode: str, depth: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, str(depth), "--width", str(args.width),
           "--patch", str(args.patch), "--batch", str(args.batch), "--device", args.device,
           "--generator", args.generator]
    # glibc serves every allocation of 1 MiB or more with its own mapping and unmaps it when
    # freed, so the resident size follows the live tensors instead of malloc's cache.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"mode": mode, "depth": depth, "error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt(value, digits=0):
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=32, help="channels of the core")
    parser.add_argument("--patch", type=int, default=48, help="edge of the cubic patch")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--depths", type=int, nargs="+", default=DEPTHS)
    parser.add_argument("--modes", nargs="+", default=None,
                        help="engines to run (default: all available)")
    parser.add_argument("--generator", choices=GENERATORS, default="generic",
                        help="the measured network: the generic lift/core/projection model, "
                             "or revmed's RevGAN generator with the srcnn or strided encoder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="depths 0, 1, 4 (a smoke test)")
    parser.add_argument("--json", type=Path, default=_common.RESULTS / "memory.json")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        mode, depth = args.worker[0], int(args.worker[1])
        print(json.dumps(worker(mode, depth, args.width, args.patch, args.batch, args.device,
                                args.generator)))
        return
    if args.quick:
        args.depths = [0, 1, 4]

    modes = args.modes or (_common.available_modes() if args.generator == "generic"
                           else ["revmed", "naive"])
    results = []
    for depth in args.depths:
        for mode in modes:
            r = run_worker_process(args, mode, depth)
            results.append(r)
            print(f"  depth {depth:2d} {mode:10s} "
                  + (r["error"] if "error" in r else f"step {r['step_mib']:.0f} MiB"),
                  file=sys.stderr, flush=True)

    by = {(r["mode"], r["depth"]): r for r in results}
    unit = "max_memory_allocated" if args.device == "cuda" else "peak RSS"
    header = ["depth", "model MiB"] + [f"{m} step MiB" for m in modes] \
        + [f"{m} saved MiB" for m in modes if m != "memcnn"]
    rows = []
    for depth in args.depths:
        model = next((by[(m, depth)].get("model_mib") for m in modes
                      if "model_mib" in by[(m, depth)]), None)
        row = [depth, fmt(model, 2)]
        row += [fmt(by[(m, depth)].get("step_mib")) for m in modes]
        row += [fmt(by[(m, depth)].get("saved_mib"), 1) for m in modes if m != "memcnn"]
        rows.append(row)
    what = ("" if args.generator == "generic"
            else f"RevGAN generator F, {args.generator} encoder, ")
    print(f"\nTraining step memory, {what}{args.width} channels, batch {args.batch} x "
          f"{args.patch}^3, {args.device} ({unit} above the model and batch; "
          f"saved = tensors saved for backward):\n")
    print(_common.markdown_table(header, rows))
    revmed16, naive16 = by.get(("revmed", 16), {}), by.get(("naive", 16), {})
    if "step_mib" in revmed16 and "step_mib" in naive16:
        ratio = revmed16["step_mib"] / naive16["step_mib"]
        print(f"\ndepth 16: revmed / naive step memory = {ratio:.2f} (target: at most 0.25)")
    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"\n{r['mode']} at depth {r['depth']} failed: {r['error']}")
    _common.write_json(args.json, {
        "benchmark": "memory", "generator": args.generator, "width": args.width,
        "patch": args.patch, "batch": args.batch,
        "machine": _common.machine(args.device), "results": results})
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
