"""Training-step time of each engine relative to plain autograd, at one core depth.

All engines are built once with identical weights and measured in alternation in one process
(one step of each per round, the order rotating every round), so that drifts of a shared
machine hit them alike; the table gives medians over rounds. On CPU the primary figure is the
process CPU time of the step (threads fixed with --threads, 1 by default), which time-slicing
by other processes does not inflate; wall time is reported beside it. On CUDA it is wall time
between synchronisations.

The script also reports the reconstruction error |inverse(forward(h)) - h| (max and mean) of
the same core, on the features h of the same batch, per precision: fp32, bf16 autocast, and on
CUDA fp16 autocast.

    python benchmarks/speed.py                       # depth 8, 32 channels, 48^3
    python benchmarks/speed.py --quick               # 3 rounds: a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import _common


def timed_step(model, x, target, device: str) -> tuple[float, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    cpu, wall = time.process_time(), time.perf_counter()
    _common.train_step(model, x, target)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.process_time() - cpu, time.perf_counter() - wall


def reconstruction_errors(model, x, device: str) -> list[dict]:
    """max and mean |inverse(forward(h)) - h| of the reversible core on h = lift(x)."""
    from revmed.nn import invertibility_error

    lift, core = model[0], model[1]
    with torch.no_grad():
        h = lift(x)
    precisions = [("fp32", None), ("bf16 autocast", torch.bfloat16)]
    if device == "cuda":
        precisions.append(("fp16 autocast", torch.float16))
    rows = []
    for name, dtype in precisions:
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            errors = {r: invertibility_error(core, h, r) for r in ("max", "mean")}
        rows.append({"precision": name, "max_abs_error": errors["max"],
                     "mean_abs_error": errors["mean"], "max_abs_input": h.abs().max().item()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU")
    parser.add_argument("--modes", nargs="+", default=None,
                        help="engines to time (default: all available; naive and revmed always)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="3 rounds (a smoke test)")
    parser.add_argument("--json", type=Path, default=_common.RESULTS / "speed.json")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 3
    if args.device == "cpu":
        torch.set_num_threads(args.threads)

    modes = args.modes or _common.available_modes()
    modes = [m for m in ("revmed", "naive") if m not in modes] + modes
    models = {m: _common.build_model(m, args.depth, args.width).to(args.device) for m in modes}
    x, target = _common.make_batch(args.batch, args.patch, args.device)
    for model in models.values():  # warm-up: allocator, oneDNN primitives, CUDA kernels
        _common.train_step(model, x, target)

    times = {m: [] for m in modes}
    for r in range(args.rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for m in order:
            times[m].append(timed_step(models[m], x, target, args.device))
        print(f"  round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)

    primary = "wall" if args.device == "cuda" else "cpu"
    med = {m: {"cpu": statistics.median(t[0] for t in times[m]),
               "wall": statistics.median(t[1] for t in times[m])} for m in modes}
    rows = []
    for m in modes:
        rows.append([m, f"{med[m][primary]:.3f}", f"{med[m][primary] / med['naive'][primary]:.2f}x",
                     f"{med[m]['wall']:.3f}", f"{med[m]['wall'] / med['naive']['wall']:.2f}x"])
    threads = f", {args.threads} thread(s)" if args.device == "cpu" else ""
    print(f"\nTraining step at depth {args.depth}, {args.width} channels, batch {args.batch} x "
          f"{args.patch}^3, {args.device}{threads}; medians of {args.rounds} alternated rounds:\n")
    print(_common.markdown_table(
        ["engine", f"{primary} s", "vs naive", "wall s", "wall vs naive"], rows))
    ratio = med["revmed"][primary] / med["naive"][primary]
    print(f"\nrevmed / naive = {ratio:.2f}x (target: at most 1.40x)")

    recon = reconstruction_errors(models["revmed"], x, args.device)
    print(f"\nReconstruction error |inverse(forward(h)) - h| of the depth-{args.depth} core on the "
          f"features h of the same batch:\n")
    print(_common.markdown_table(
        ["precision", "max", "mean", "max abs h"],
        [[r["precision"], f"{r['max_abs_error']:.1e}", f"{r['mean_abs_error']:.1e}",
          f"{r['max_abs_input']:.2f}"] for r in recon]))

    _common.write_json(args.json, {
        "benchmark": "speed", "depth": args.depth, "width": args.width, "patch": args.patch,
        "batch": args.batch, "rounds": args.rounds, "machine": _common.machine(args.device),
        "median_s": med, "ratio_vs_naive": {m: med[m][primary] / med["naive"][primary]
                                            for m in modes},
        "step_s": {m: times[m] for m in modes}, "reconstruction": recon})
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
