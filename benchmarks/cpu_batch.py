"""Training-step time of the demo-sr RevGAN on the CPU against batch size.

PyTorch sends batch-1 3D convolutions with small inputs to its generic ``slow_conv3d`` CPU
kernels instead of oneDNN; this measures what that costs a whole RevGAN step (generator and
critics, forward and backward) so the demo presets can choose their batch size.

    python benchmarks/cpu_batch.py [--sizes 1 2 4] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from revmed import config
from revmed.engine.objectives import build_objective
from revmed.models import build_critics, build_model, model_spec


def step_seconds(batch: int, preset) -> float:
    torch.manual_seed(0)
    kind, kwargs = model_spec(preset)
    model = build_model(kind, **kwargs)
    critics = build_critics(preset.model, preset.data, preset.train.objective, preset.patch.size)
    objective = build_objective(preset.train)
    size = preset.patch.size
    data = {k: torch.randn(batch, 1, *size) for k in ("X", "Y")}
    start = time.perf_counter()
    loss, _, fakes = objective.generator_step(model, critics, data)
    loss.backward()
    d_loss, _ = objective.critic_step(critics, data, fakes)
    d_loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo-sr")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/cpu_batch.json"))
    args = parser.parse_args()
    preset = config.load_preset(args.preset)
    times: dict[int, list[float]] = {b: [] for b in args.sizes}
    step_seconds(args.sizes[0], preset)  # warm-up
    for _ in range(args.rounds):  # alternate the batch sizes so machine noise hits all alike
        for batch in args.sizes:
            times[batch].append(step_seconds(batch, preset))
    rows = []
    print(f"preset {args.preset}, patch {list(preset.patch.size)}, {torch.get_num_threads()} "
          f"threads, median of {args.rounds}\n")
    print("| batch | s per step | s per patch | per patch vs batch 1 |\n|---|---|---|---|")
    base = statistics.median(times[args.sizes[0]]) / args.sizes[0]
    for batch in args.sizes:
        median = statistics.median(times[batch])
        rows.append({"batch": batch, "step_s": median, "patch_s": median / batch})
        print(f"| {batch} | {median:.2f} | {median / batch:.2f} | {median / batch / base:.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"preset": args.preset, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
