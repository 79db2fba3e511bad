"""Which frozen normalisation statistics bring tiled inference closest to blended windows?

Tiled inference (docs/inference.md) replaces each instance norm by a fixed scale and shift
from the statistics training kept: per channel, the mean over training patches of each patch's
mean and of each patch's variance. This script tries other ways of turning training patches
into a fixed scale and shift, on runs that ``benchmarks/quality.py`` trained and kept
(``--work``), and scores each on the held-out volumes against blended windows with per-window
norms (the way the network was trained to run):

* ``checkpoint``: the statistics in ``best.pt`` (until revmed measured them after each epoch,
  ``TrainingStep.calibrate``, these were gathered over the epoch's training calls);
* ``mean-var``: that rule on the patches of the run's first epochs, measured here with the
  trained weights;
* ``pooled``: mean of the means, and the variance of all voxels of all patches together (the
  patch variance plus the spread of the patch means, as batch norm would have it);
* ``rsqrt``: the mean over patches of the scale each patch got, ``1/sqrt(var + eps)``, and of
  its shift, ``-mean/sqrt(var + eps)``: the average of the maps the norm applied;
* ``sequential``: revmed's rule, measured norm by norm in network order with the norms before
  already frozen, so each norm's statistics are of the inputs it will see at inference.

    python benchmarks/quality.py --tasks sr,da --configs 2r-res,2r-res-strided --steps 120 \\
        --work /tmp/quality-runs
    python benchmarks/norm_statistics.py /tmp/quality-runs --subsets 32,136

PSNR in HU (data range 1500 HU, whole volumes), the forward direction (F), mean over the
held-out volumes; "- windows" is each way's difference from blended windows at the preset's
overlap, per volume, mean and on how many volumes the way is higher.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import _common

DATA_RANGE = 1500.0
WAYS = ("checkpoint", "mean-var", "pooled", "rsqrt", "sequential")


def per_patch_statistics(net, patches: torch.Tensor, frozen: dict | None = None,
                         batch: int = 8) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{norm name: (means, variances)}``, each ``(N, C)``: what every instance norm that F
    calls sees on each of ``patches`` ``(N, C, D, H, W)``; with ``frozen`` the norms it names
    are frozen first (``revmed.nn.norm_statistics.freeze_norms``)."""
    from revmed.nn.norm_statistics import freeze_norms, instance_norms

    model = freeze_norms(net, frozen) if frozen else net
    seen: dict[str, list] = {}

    def hook(_module, args, name):
        var, mean = torch.var_mean(args[0].float(), dim=(2, 3, 4), correction=0)
        seen.setdefault(name, []).append((mean, var))

    handles = [norm.register_forward_pre_hook(lambda m, a, name=name: hook(m, a, name))
               for name, norm in instance_norms(model).items()]
    try:
        with torch.no_grad():
            for start in range(0, len(patches), batch):
                model(patches[start:start + batch])
    finally:
        for handle in handles:
            handle.remove()
    return {name: (torch.cat([m for m, _ in parts]), torch.cat([v for _, v in parts]))
            for name, parts in seen.items()}


def as_statistics(means: torch.Tensor, variances: torch.Tensor, rule: str,
                  eps: float = 1e-5) -> torch.Tensor:
    """The ``(2, C)`` (mean, variance) a ``FixedNorm3d`` takes, by ``rule`` from per-patch
    ``(N, C)`` means and variances."""
    means, variances = means.double(), variances.double()
    if rule == "pooled":
        return torch.stack([means.mean(0), variances.mean(0) + means.var(0, correction=0)])
    if rule == "rsqrt":  # scale s and shift t as averaged; mean m and var v with s, -m s = t
        scale = torch.rsqrt(variances + eps).mean(0)
        shift = (-means * torch.rsqrt(variances + eps)).mean(0)
        return torch.stack([-shift / scale, scale.pow(-2) - eps])
    return torch.stack([means.mean(0), variances.mean(0)])


def statistics_by_way(net, patches: torch.Tensor, saved: dict,
                      subsets: tuple[int, ...] = ()) -> dict[str, dict]:
    found = per_patch_statistics(net, patches)
    out = {"checkpoint": saved}
    for rule in ("mean-var", "pooled", "rsqrt"):
        out[rule] = {name: as_statistics(m, v, rule).float() for name, (m, v) in found.items()}
    pick = torch.randperm(len(patches), generator=torch.Generator().manual_seed(0))
    for count in subsets:  # revmed's rule on ``count`` of the patches, drawn at random
        chosen = pick[:count]
        out[f"mean-var, {count} patches"] = {
            name: as_statistics(m[chosen], v[chosen], "mean-var").float()
            for name, (m, v) in found.items()}
    sequential: dict = {}
    for name in found:  # hooks fire in network order, so dict order is that order
        measured = per_patch_statistics(net, patches, sequential)
        sequential[name] = as_statistics(*measured[name], "mean-var").float()
    out["sequential"] = sequential
    return out


def psnr_per_volume(translator, inputs: list, references: list, **options) -> np.ndarray:
    from revmed.metrics import psnr

    return np.array([psnr(translator.translate(v, **options).array, r.array, DATA_RANGE)
                     for v, r in zip(inputs, references)])


def run_rows(run_dir: Path, spec: dict, epochs: int,
             subsets: tuple[int, ...] = ()) -> list[list[str]]:
    from revmed.checkpoint import load_checkpoint
    from revmed.data.training_patches import TrainingPatches
    from revmed.inference import Translator
    from revmed.io import read_volume

    checkpoint = load_checkpoint(run_dir / "best.pt")
    net = checkpoint.card.build()
    net.load_state_dict(checkpoint.state["generator"])
    net.eval()
    source = TrainingPatches(spec["data"], checkpoint.preset)
    patches = torch.from_numpy(np.concatenate(
        [source.epoch_patches(e)["X"] for e in range(epochs)])).float()
    inputs = [read_volume(Path(spec["input"]) / f"{n}.nii.gz") for n in spec["test_cases"]]
    references = [read_volume(Path(spec["reference"]) / f"{n}.nii.gz")
                  for n in spec["test_cases"]]
    translator = Translator.from_checkpoint(checkpoint, run_dir / "best.pt")
    windows = psnr_per_volume(translator, inputs, references, tiling="windows")
    rows = [["windows (per-window norms)", f"{windows.mean():.3f}", "-", "-"]]
    saved = checkpoint.state["norm_statistics"]
    for way, stats in statistics_by_way(net, patches, saved["forward"], subsets).items():
        state = {**checkpoint.state, "norm_statistics": {**saved, "forward": stats}}
        variant = Translator.from_checkpoint(
            type(checkpoint)(checkpoint.card, checkpoint.preset, state), run_dir / "best.pt")
        scores = psnr_per_volume(variant, inputs, references)
        diff = scores - windows
        rows.append([way, f"{scores.mean():.3f}", f"{diff.mean():+.3f}",
                     f"{int((diff > 0).sum())}/{len(diff)}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="a benchmarks/quality.py --work folder")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs of training patches to measure on (default 4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--subsets", default="",
                        help="comma-separated patch counts: revmed's rule on that many of the "
                             "patches too, drawn at random")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subsets = tuple(int(n) for n in args.subsets.split(",") if n.strip())
    for spec_path in sorted(args.work.glob("*/specs/*.json")):
        if spec_path.name.endswith(".out.json"):
            continue
        spec = json.loads(spec_path.read_text())
        run_dir = Path(spec["run_dir"])
        if not (run_dir / "best.pt").is_file():
            continue
        task = spec_path.parent.parent.name
        print(f"\n{task}, {spec_path.stem} ({len(spec['test_cases'])} held-out volumes, "
              f"{_common.cpu_name()}):\n", flush=True)
        print(_common.markdown_table(["statistics", "PSNR dB (HU)", "- windows", "higher on"],
                                     run_rows(run_dir, spec, args.epochs, subsets)),
              flush=True)


if __name__ == "__main__":
    main()
