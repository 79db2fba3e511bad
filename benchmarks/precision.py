"""How exact the memory-free backward is in each precision: the core's reconstruction error.

The memory-free backward rebuilds every coupling block's input from its output. In float32 the
rebuild is exact to rounding; under bf16 or fp16 autocast the sub-networks' outputs are rounded
to 8 or 11 mantissa bits, so ``x = y - f(...)`` no longer returns the stored input exactly. This
script measures what the trainer logs as ``core_recon_error``: ``max |C^-1(C(h)) - h|`` of the
core on the features ``h`` of a patch, for the RevGAN core at several depths and for the iUNet,
at initialisation and after the weights are perturbed (a trained network's sub-networks are not
zero). It also compares one step's gradients with those of plain autograd in the same
precision (the relative error of the flattened gradient): the error the rebuild adds to
training.

Features ``h`` are from ``Enc_X`` (RevGAN) or the 1x1x1 lift (iUNet) of a random patch in
[-1, 1], 32^3, batch 2, on the CPU (autocast supports bf16 and fp16 there too).

    python benchmarks/precision.py
    python benchmarks/precision.py --device cuda
"""

from __future__ import annotations

import argparse
import sys

import torch

import _common
from revmed.models import build_model
from revmed.nn import invertibility_error
from revmed.runtime import DTYPES, autocast

MODELS = {
    "RevGAN core, depth 2": ("revgan3d", {"width": 16, "depth": 2}),
    "RevGAN core, depth 8": ("revgan3d", {"width": 16, "depth": 8}),
    "iUNet, blow-up 16, 3 scales, 2 blocks": ("iunet3d", {"in_channels": 4, "out_channels": 3,
                                                          "channels": 16, "scales": 3,
                                                          "blocks_per_scale": 2}),
}


def perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Add N(0, scale) noise to every weight: a network that is no longer the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def gradient_error(model: torch.nn.Module, x: torch.Tensor, precision: str,
                   device: torch.device) -> float:
    """Relative L2 error of the memory-free gradients against plain autograd's, same dtype."""
    grads = []
    for saving in (True, False):
        model.core.memory_saving = saving
        model.zero_grad(set_to_none=True)
        with autocast(precision, device):
            out = model(x)
        out.float().square().mean().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()
                                if p.grad is not None]))
    model.core.memory_saving = True
    return float((grads[0] - grads[1]).norm() / grads[1].norm().clamp_min(1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=32, help="patch edge (default 32)")
    parser.add_argument("--json", default=str(_common.RESULTS / "precision.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    rows, results = [], []
    for label, (kind, kwargs) in MODELS.items():
        for state in ("init", "perturbed"):
            torch.manual_seed(0)
            model = build_model(kind, **kwargs).to(device)
            if state == "perturbed":
                perturb(model)
            channels = kwargs.get("in_channels", 1)
            x = (torch.rand(2, channels, *(args.size,) * 3, device=device) * 2 - 1)
            with torch.no_grad():
                h = model.core_input(x)
            row = {"model": label, "weights": state}
            for precision in DTYPES:
                with torch.no_grad(), autocast(precision, device):
                    row[f"recon_{precision}"] = invertibility_error(model.core, h)
                row[f"grad_{precision}"] = gradient_error(model, x, precision, device)
            results.append(row)
            rows.append([label, state,
                         *(f"{row[f'recon_{p}']:.1e}" for p in DTYPES),
                         *(f"{row[f'grad_{p}']:.1e}" for p in DTYPES)])
            print(f"{label} ({state}) done", file=sys.stderr, flush=True)
    header = ["model", "weights", *(f"recon {p}" for p in DTYPES),
              *(f"grad rel. err {p}" for p in DTYPES)]
    print(f"\n{_common.machine(args.device)}; patch {args.size}^3, batch 2\n")
    print(_common.markdown_table(header, rows))
    _common.write_json(_common.Path(args.json), {"benchmark": "precision",
                                                 "machine": _common.machine(args.device),
                                                 "rows": results})


if __name__ == "__main__":
    main()
