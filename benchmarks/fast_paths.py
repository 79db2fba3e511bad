"""Step and inference time with ``--compile`` and ``--channels-last``, per preset and precision.

For each preset and precision a fresh worker process builds the preset's real training step
(``revmed.engine.step.TrainingStep``: generator, critics, objective, Adam) four times from one
seed: plain, compiled, channels-last, and both. It times the first step of each (which
includes compilation), then rounds of one step of each variant, the order rotating every
round, so that a shared machine's drifts hit all four alike. Inference is
``revmed.inference.windows.sliding_window_predict`` over a volume of 1.5 times the patch edge
(8 windows), timed the same way. The table gives medians, and each variant's time relative to
the plain one of the same precision.

On CPU the primary figure is the process CPU time with the threads fixed (``--threads``),
with wall time beside it; on CUDA, wall time between synchronisations. ``fallbacks`` counts
Dynamo's "recompile limit" warnings (a compiled part that went back to eager mode); it
should be 0. ``max abs diff`` is the largest difference of the variant's inference output from
the plain one's, in the network's [-1, 1] range (segmentation: logits).

    python benchmarks/fast_paths.py                       # 4 presets x fp32, bf16; ~15 min
    python benchmarks/fast_paths.py --quick               # demo-sr, fp32, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import _common

VARIANTS = {"plain": (False, False), "compile": (True, False),
            "channels-last": (False, True), "both": (True, True)}


class _FallbackCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "recompile_limit" in record.getMessage():
            self.count += 1


def _timed(fn, device: str) -> tuple[float, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.process_time() - cpu, time.perf_counter() - wall


def _batch(preset, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size, b = preset.patch.size, preset.train.batch_size
    data = preset.data
    x = torch.rand(b, data.in_channels, *size, generator=gen) * 2 - 1
    if preset.train.objective == "segmentation":
        label = torch.randint(0, 5, (b, 1, *size), generator=gen).float()
        label[label == 3] = 0  # BraTS labels 0, 1, 2, 4
        return {"X": x.to(device), "label": label.to(device)}
    y = torch.rand(b, data.out_channels, *size, generator=gen) * 2 - 1
    return {"X": x.to(device), "Y": y.to(device)}


def worker(name: str, precision: str, args: argparse.Namespace) -> dict:
    from revmed import config
    from revmed.engine.setup import build_training_step
    from revmed.inference.windows import sliding_window_predict
    from revmed.regions import BRATS

    counter = _FallbackCounter()
    logging.getLogger("torch._dynamo").addHandler(counter)
    device = torch.device(args.device)
    edge = args.patch
    base = [f"patch.size=[{edge},{edge},{edge}]", f"train.batch_size={args.batch}",
            f"train.precision='{precision}'"]
    steps, first = {}, {}
    batch = None
    for variant, (compiled, last) in VARIANTS.items():
        preset = config.load_preset(name, [*base, f"train.compile={str(compiled).lower()}",
                                           f"train.channels_last={str(last).lower()}"])
        torch.manual_seed(0)
        # the segmentation presets train on BraTS-coded labels (the batch below holds them)
        steps[variant] = build_training_step(preset, device, labels=BRATS)
        batch = batch or _batch(preset, device, seed=1)
        first[variant] = _timed(lambda: steps[variant].step(batch), args.device)[1]
    side = edge + edge // 2  # 2 x 2 x 2 windows at overlap 0.25
    volume = np.random.default_rng(2).uniform(
        -1, 1, (preset.data.in_channels, side, side, side)).astype(np.float32)

    def infer(variant: str) -> np.ndarray:
        step = steps[variant]
        step.model.eval()
        out = sliding_window_predict(step.model, volume, [edge] * 3, 0.25, args.batch, device,
                                     precision=precision, channels_last=step.channels_last)
        step.model.train()
        return out

    outputs = {v: infer(v) for v in VARIANTS}  # warm-up (eval-mode graphs) and the outputs
    train_times = {v: [] for v in VARIANTS}
    infer_times = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    for r in range(args.rounds):
        for v in order[r % 4:] + order[:r % 4]:
            train_times[v].append(_timed(lambda: steps[v].step(batch), args.device))
            infer_times[v].append(_timed(lambda: infer(v), args.device))
        print(f"  {name} {precision}: round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    primary = 1 if args.device == "cuda" else 0
    rows = {}
    for v in VARIANTS:
        rows[v] = {
            "first_step_wall_s": first[v],
            "step_s": statistics.median(t[primary] for t in train_times[v]),
            "step_wall_s": statistics.median(t[1] for t in train_times[v]),
            "infer_s": statistics.median(t[primary] for t in infer_times[v]),
            "max_abs_diff": float(np.abs(outputs[v] - outputs["plain"]).max()),
        }
    return {"preset": name, "precision": precision, "fallbacks": counter.count,
            "variants": rows, "train_times": train_times, "infer_times": infer_times}


def _name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else _common.cpu_name()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+",
                        default=["demo-sr", "demo-seg", "chestct-sr", "brats-seg"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--patch", type=int, default=32, help="patch edge (all presets)")
    parser.add_argument("--batch", type=int, default=2, help="patches per step")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="demo-sr, fp32, 2 rounds")
    parser.add_argument("--json", type=Path, default=_common.RESULTS / "fast_paths.json")
    parser.add_argument("--worker", nargs=2, metavar=("PRESET", "PRECISION"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return
    if args.quick:
        args.presets, args.precisions, args.rounds = ["demo-sr"], ["fp32"], 2
    passed = ["--patch", str(args.patch), "--batch", str(args.batch), "--rounds",
              str(args.rounds), "--threads", str(args.threads), "--device", args.device]
    results = []
    for name in args.presets:
        for precision in args.precisions:
            done = subprocess.run([sys.executable, __file__, *passed, "--worker", name,
                                   precision], stdout=subprocess.PIPE, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    unit = "wall s" if args.device == "cuda" else "cpu s"
    rows = []
    for result in results:
        plain = result["variants"]["plain"]
        for v, row in result["variants"].items():
            rows.append([result["preset"], result["precision"], v,
                         f"{row['step_s']:.3f}", f"{row['step_s'] / plain['step_s']:.2f}x",
                         f"{row['infer_s']:.3f}", f"{row['infer_s'] / plain['infer_s']:.2f}x",
                         f"{row['first_step_wall_s']:.1f}", f"{row['max_abs_diff']:.1e}",
                         result["fallbacks"]])
    threads = f", {args.threads} thread(s)" if args.device == "cpu" else ""
    side = args.patch + args.patch // 2
    print(f"\nBatch {args.batch} x {args.patch}^3 patches; inference over a {side}^3 volume "
          f"(overlap 0.25); {args.device}{threads}; medians of {args.rounds} alternated "
          f"rounds; {_name(args.device)}:\n")
    print(_common.markdown_table(
        ["preset", "precision", "variant", f"step {unit}", "vs plain", f"infer {unit}",
         "vs plain", "first step wall s", "max abs diff", "fallbacks"], rows))
    _common.write_json(args.json, {"benchmark": "fast_paths", "patch": args.patch,
                                   "batch": args.batch, "rounds": args.rounds,
                                   "machine": _common.machine(args.device), "results": results})
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
