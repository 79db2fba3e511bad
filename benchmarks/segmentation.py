"""BraTS-style segmentation: revmed's 3D iUNet against MONAI's UNet at a fixed step budget.

Data: ``revmed synth brats-seg`` volumes (4 modalities, labels 0/1/2/4) on a 64^3 grid, split
into train / val / test; the test cases are held out and only scored at the end.

Every configuration is trained by the same loop in a fresh subprocess, so that the models see
exactly the same data in the same order:

* patches: ``revmed.data.training_patches.TrainingPatches`` with the ``demo-seg`` preset (crops
  centred on each label in turn, new ones every epoch, z-scored inside the brain), batches and
  random flips by the trainer's own batching (``revmed.data.batches.epoch_batches``);
* loss: ``revmed.engine.objectives.SegmentationObjective`` (soft Dice + BCE per region), with
  every network's logits starting at the same prior (``revmed.models.iunet.OUTPUT_PRIOR``);
* Adam with the preset's learning rate and betas, no schedule;
* ``--steps`` optimisation steps of ``--batch`` patches, whatever the time it takes, so the
  result does not depend on how busy the machine is; no validation, the last weights are
  scored.

The iUNet is built by revmed's registry from the preset (``model.width`` = the channel blow-up,
3 scales, ``model.blocks_per_scale`` couplings per scale and side, memory saving on). The
baselines are ``monai.networks.nets.UNet`` with 3 resolution levels like the iUNet:

* ``unetC``: ``channels=(C, 2C, 4C), strides=(2, 2), num_res_units=2``, MONAI's usual
  configuration: its first convolution is strided, so it has no feature maps at full
  resolution (levels 1/2, 1/4, and a 1/4 bottom);
* ``unetC-full``: ``channels=(C, 2C, 4C, 4C), strides=(1, 2, 2), num_res_units=2``: C channels
  at full resolution, 2C at 1/2, 4C at 1/4 (plus a 4C bottom at 1/4): the same widths per scale
  as the iUNet with blow-up C.

Scoring: each held-out volume is predicted whole by
``revmed.inference.windows.sliding_window_predict`` (window = patch size, the preset's overlap
and Gaussian blending), a region is ``logit > 0``, and ``revmed.metrics.dice`` compares ET, TC
and WT with the reference; mean +- std over the test cases. "Chance" is the Dice of predicting
the region everywhere inside the brain mask.

Memory, per configuration (its own process, ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed
tensors go back to the kernel and the resident size follows the live tensors):

* peak train MiB: the resident-memory high-water mark (VmHWM, reset through
  /proc/self/clear_refs once the data is loaded and the model built) over all training steps,
  above the resident size at that point: activations, gradients, Adam's moments, temporaries;
* step MiB: the same for the last training step alone (Adam's moments already exist);
* saved MiB: the bytes autograd saves for backward in that step's forward pass
  (``revmed.nn.SavedTensorMeter``, parameters excluded); deterministic.

The ``demo`` part runs the shipped ``demo-seg`` preset as a user would, through the CLI
(``revmed synth``, ``revmed train`` with its built-in time limit, ``revmed infer``, ``revmed
eval --regions brats``), and compares its whole-tumour Dice with chance; with ``--demo-seeds``
it does so once per synth seed (fresh data each time) and prints every held-out case's Dice per
region with the mean, std and worst case; ``--demo-set KEY=VALUE`` tries a preset change the
way a user would. The ``sampling`` part counts how often demo-seg's training patches hold each
label, with uniform and with label-balanced crops.

    python benchmarks/segmentation.py                  # every config and the demo (~30 min)
    python benchmarks/segmentation.py --quick          # smoke test (under two minutes)
    python benchmarks/segmentation.py --parts sweep --configs iunet16-b2,unet16 --steps 100
    python benchmarks/segmentation.py --parts demo --demo-seeds 1,3,5,7,9   # ~20 min
    python benchmarks/segmentation.py --parts demo --demo-seeds 11,12 --demo-load 1  # loaded
    python benchmarks/segmentation.py --parts sampling                      # ~1 min
    python benchmarks/segmentation.py --parts phantom                       # ~15 s
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import _common

PRESET = "demo-seg"
SHAPE = (64, 64, 64)
REGIONS = ("ET", "TC", "WT")
#: glibc: allocations of 64 KiB or more get their own mapping, returned to the kernel when freed
#: (the coarsest iUNet feature maps are well below 1 MiB; see benchmarks/iunet_memory.py).
MMAP_THRESHOLD = 64 << 10


@dataclass(frozen=True)
class Config:
    key: str
    kind: str           # "iunet" or "unet"
    width: int          # iUNet channel blow-up / UNet channels at the first level
    blocks: int = 2     # iUNet coupling blocks per scale and side
    full_res: bool = False  # UNet: a first level at full resolution (stride 1)

    @property
    def label(self) -> str:
        if self.kind == "iunet":
            return f"iUNet blow-up {self.width}, {self.blocks} block{'s' * (self.blocks > 1)}/scale"
        c = self.width
        if self.full_res:
            return f"MONAI UNet ({c},{2 * c},{4 * c},{4 * c}) strides (1,2,2)"
        return f"MONAI UNet ({c},{2 * c},{4 * c}) strides (2,2)"


CONFIGS = [
    Config("iunet16-b1", "iunet", 16, 1),
    Config("iunet16-b2", "iunet", 16, 2),
    Config("iunet16-b4", "iunet", 16, 4),
    Config("iunet32-b2", "iunet", 32, 2),
    Config("iunet64-b2", "iunet", 64, 2),
    Config("unet16", "unet", 16),
    Config("unet32", "unet", 32),
    Config("unet64", "unet", 64),
    Config("unet16-full", "unet", 16, full_res=True),
]
BY_KEY = {c.key: c for c in CONFIGS}
#: Rough seconds per step at 48^3, batch 2, one thread (to start the slow ones first).
COST = {"iunet64-b2": 8.0, "iunet16-b4": 4.5, "iunet32-b2": 3.4, "iunet16-b2": 2.3,
        "iunet16-b1": 1.3, "unet64": 0.8, "unet16-full": 0.8, "unet32": 0.3, "unet16": 0.1}
QUICK_CONFIGS = ["iunet16-b1", "iunet16-b2", "unet16"]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the models ------------------------------------------------------------------------------

def preset_overrides(spec: dict) -> list[str]:
    p = spec["patch"]
    return [f"patch.size=[{p},{p},{p}]", f"patch.per_volume={spec['per_volume']}",
            f"train.batch_size={spec['batch']}", "train.time_limit=0",
            f"train.seed={spec['seed']}", f"model.width={spec['width']}",
            f"model.blocks_per_scale={spec['blocks']}"]


def build_network(cfg: Config, preset):
    """The network of ``cfg``: (B, 4, D, H, W) -> (B, 3, D, H, W) logits."""
    import torch

    from revmed.models.iunet import OUTPUT_PRIOR

    if cfg.kind == "iunet":
        from revmed.models import build_model, model_spec

        kind, kwargs = model_spec(preset)
        return build_model(kind, **kwargs)
    from monai.networks.nets import UNet

    c = cfg.width
    data = preset.data
    if cfg.full_res:
        channels, strides = (c, 2 * c, 4 * c, 4 * c), (1, 2, 2)
    else:
        channels, strides = (c, 2 * c, 4 * c), (2, 2)
    unet = UNet(spatial_dims=3, in_channels=data.in_channels,
                out_channels=data.out_channels, channels=channels, strides=strides,
                num_res_units=2)
    # the same start as the iUNet's logits (IUNet3D's prior): the last convolution's bias
    last = [m for m in unet.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))
            and m.out_channels == data.out_channels][-1]
    torch.nn.init.constant_(last.bias, math.log(OUTPUT_PRIOR / (1.0 - OUTPUT_PRIOR)))
    return unet


# --- one configuration (a fresh process) -----------------------------------------------------

def worker(spec: dict) -> dict:
    """Train one configuration for ``spec["steps"]`` steps, measure memory, score the test set."""
    import numpy as np
    import torch

    from revmed import config
    from revmed.data.layout import load_dataset
    from revmed.data.batches import epoch_batches
    from revmed.data.samples import load_sample
    from revmed.data.training_patches import TrainingPatches
    from revmed.engine.objectives import SegmentationObjective
    from revmed.inference.windows import sliding_window_predict
    from revmed.metrics import dice
    from revmed.nn import SavedTensorMeter
    from revmed.regions import BRATS

    torch.set_num_threads(spec["threads"])
    cfg = Config(**spec["config"])
    preset = config.load_preset(PRESET, preset_overrides({**spec, "width": cfg.width,
                                                          "blocks": cfg.blocks}))
    train = preset.train
    torch.manual_seed(train.seed)
    np.random.seed(train.seed)
    patches = TrainingPatches(spec["data"], preset)
    torch.manual_seed(train.seed)  # the same initial draw for every model of a kind
    model = build_network(cfg, preset)
    model.train()
    objective = SegmentationObjective(BRATS)
    optimiser = torch.optim.Adam(model.parameters(), lr=train.lr, betas=tuple(train.betas))
    params = sum(p.numel() for p in model.parameters())
    device = torch.device("cpu")

    def batches():
        epoch = 0
        while True:
            yield from epoch_batches(patches.epoch_patches(epoch), patches.kind,
                                     train.batch_size, train.seed, epoch, device)
            epoch += 1

    steps = spec["steps"]
    gc.collect()
    base_kib = _common.status_kib("VmRSS")
    reset = _common.reset_peak_rss()
    losses: list[float] = []
    step_mib = saved_mib = None
    peak_before_last = 0
    start, cpu_start = time.monotonic(), _common.cpu_seconds()
    for step, batch in enumerate(batches(), start=1):
        last = step == steps
        if last and reset:  # the last step on its own: its peak above what it starts from
            peak_before_last = _common.status_kib("VmHWM") or 0
            gc.collect()
            step_base = _common.status_kib("VmRSS") or 0
            _common.reset_peak_rss()
        meter = SavedTensorMeter(exclude=model.parameters()) if last else None
        if meter is not None:
            with meter:
                loss, logs, _ = objective.generator_step(model, {}, batch)
        else:
            loss, logs, _ = objective.generator_step(model, {}, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(logs["loss"])
        if last:
            saved_mib = meter.bytes / 2**20
            if reset:
                step_mib = ((_common.status_kib("VmHWM") or 0) - step_base) / 1024
            break
    train_s, cpu_s = time.monotonic() - start, _common.cpu_seconds() - cpu_start
    peak_kib = max(peak_before_last, _common.status_kib("VmHWM") or 0) if reset else None
    result = {
        "key": cfg.key, "label": cfg.label, "params": params, "steps": len(losses),
        "base_rss_mib": base_kib / 1024 if base_kib else None,
        "peak_train_mib": (peak_kib - base_kib) / 1024 if reset and base_kib else None,
        "step_mib": step_mib, "saved_mib": saved_mib,
        "train_s": train_s, "train_cpu_s": cpu_s,
        "loss_first": float(np.mean(losses[:5])), "loss_last": float(np.mean(losses[-5:])),
    }
    if not spec["score"]:
        return result

    model.eval()
    infer = preset.infer
    cases = {}
    score_start = time.monotonic()
    for case in load_dataset(spec["data"]).splits["test"]:
        sample = load_sample(case, "segmentation", preset.data, BRATS)
        logits = sliding_window_predict(model, sample["X"], preset.patch.size, infer.overlap,
                                        infer.sw_batch_size, device, infer.blend)
        found = logits > 0.0
        truth = BRATS.to_regions(sample["label"]) > 0.5
        brain = sample["mask"][0] > 0
        cases[case.name] = {
            **{name: dice(p, r) for name, p, r in zip(REGIONS, found, truth)},
            **{f"chance_{name}": dice(brain, r) for name, r in zip(REGIONS, truth)},
        }
    result["score_s"] = time.monotonic() - score_start
    result["cases"] = cases
    result["dice"] = summary(cases)
    return result


def summary(cases: dict) -> dict:
    """Mean and (population) std over cases of every key of the per-case dicts."""
    keys = next(iter(cases.values())).keys() if cases else []
    out = {}
    for key in keys:
        values = [c[key] for c in cases.values()]
        mean = sum(values) / len(values)
        out[key] = {"mean": mean,
                    "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))}
    return out


def run_worker(spec: dict, spec_path: Path) -> dict:
    spec_path.write_text(json.dumps(spec))
    out_path = spec_path.with_suffix(".out.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path),
           str(out_path)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
           "OMP_NUM_THREADS": str(spec["threads"])}
    wall = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not out_path.is_file():
        lines = (done.stderr.strip() or "(no output)").splitlines()
        return {"key": spec["config"]["key"], "error": lines[-1], "stderr_tail": lines[-15:]}
    result = json.loads(out_path.read_text())
    result["worker_wall_s"] = time.monotonic() - wall
    return result


# --- the shipped demo-seg preset through the CLI ---------------------------------------------

def run_demo(work: Path, cases: int, seed: int, threads: int | None = None,
             overrides: tuple[str, ...] = ()) -> dict:
    """``revmed synth`` / ``train`` / ``infer`` / ``eval`` as docs/segmentation.md shows them.

    ``threads``: OMP_NUM_THREADS for the commands (None: left as it is, as for a user);
    ``overrides``: ``key=value`` preset overrides for ``revmed train`` (``--set``).
    """
    import numpy as np

    from revmed.io import read_volume

    data, run, pred = work / "demo-data", work / "demo-run", work / "demo-pred"
    revmed = [sys.executable, "-m", "revmed"]
    commands = [
        [*revmed, "synth", "brats-seg", str(data), "--cases", str(cases), "--seed", str(seed),
         "--shape", ",".join(map(str, SHAPE))],
        [*revmed, "train", "--preset", PRESET, "--data", str(data), "--out", str(run),
         "--device", "cpu", "--json", *(a for o in overrides for a in ("--set", o))],
        [*revmed, "infer", str(data / "test" / "images"), "-o", str(pred), "--model",
         str(run / "best.pt"), "--device", "cpu", "--quiet"],
        [*revmed, "eval", str(pred), str(data / "test" / "labels"), "--regions", "brats",
         "--json", "-", "--quiet"],
    ]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    timings = {}
    outputs = {}
    for cmd in commands:
        name = cmd[3]
        log(f"demo: revmed {' '.join(cmd[3:])}")
        t = time.monotonic()
        # run from outside the checkout so that the installed package is the one imported
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
        timings[name] = time.monotonic() - t
        if done.returncode != 0:
            tail = (done.stderr.strip() or "(no output)").splitlines()[-5:]
            return {"error": f"revmed {name} exited {done.returncode}", "stderr_tail": tail,
                    "seconds": timings}
        outputs[name] = done.stdout
    report = json.loads(outputs["eval"])
    trained = json.loads(outputs["train"])
    epochs = [json.loads(line) for line in
              (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    best = max(epochs, key=lambda r: r.get("val_dice_worst", r.get("val_dice", -math.inf)))
    chance = {}
    for case in report["cases"]:
        label = read_volume(data / "test" / "labels" / f"{case['case']}.nii.gz").array
        mask = read_volume(data / "test" / "masks" / f"{case['case']}.nii.gz").array > 0
        wt = label > 0
        chance[case["case"]] = {
            "wt_everywhere_in_brain": float(2 * (wt & mask).sum() / (wt.sum() + mask.sum())),
            "wt_fraction_of_brain": float(wt.sum() / mask.sum()),
        }
    return {"commands": [" ".join(["revmed", *c[3:]]) for c in commands],
            "omp_num_threads": env.get("OMP_NUM_THREADS"),
            "seconds": timings, "epochs": len(epochs),
            "epoch_seconds": sum(r["seconds"] for r in epochs),
            "steps": sum(r["steps"] for r in epochs),
            "stopped_at_time_limit": bool(trained.get("stopped_at_time_limit", False)),
            "best_epoch": best["epoch"], "best_val": {k: v for k, v in best.items()
                                                      if k.startswith("val_")},
            "last_epoch": epochs[-1], "summary": report["summary"],
            "cases": [{k: c[k] for k in ("case", *REGIONS)} for c in report["cases"]],
            "chance": chance,
            "chance_mean": float(np.mean([c["wt_everywhere_in_brain"] for c in chance.values()]))}


@contextlib.contextmanager
def busy_loops(count: int):
    """``count`` processes that each keep one core busy until the block ends."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def seeds_table(demos: dict) -> str:
    """Per seed and held-out case: Dice per region, epochs and seconds of training; then the
    mean +- std and the worst case over all of them."""
    header = ["synth seed", "case", *(f"Dice {r}" for r in REGIONS), "epochs",
              "seconds in epochs", "best epoch"]
    body, scores = [], {r: [] for r in REGIONS}
    for seed, demo in demos.items():
        if "error" in demo:
            body.append([seed, "failed: " + demo["error"], *[""] * (len(header) - 2)])
            continue
        for case in demo["cases"]:
            for r in REGIONS:
                scores[r].append(case[r]["dice"])
            body.append([seed, case["case"], *(f"{case[r]['dice']:.3f}" for r in REGIONS),
                         str(demo["epochs"]), f"{demo['epoch_seconds']:.0f}",
                         str(demo["best_epoch"])])
    if all(scores.values()):
        stats = {r: summary({i: {r: v} for i, v in enumerate(scores[r])})[r] for r in REGIONS}
        body.append(["mean ± std", "", *(pm(stats[r]) for r in REGIONS), "", "", ""])
        body.append(["worst", "", *(f"{min(scores[r]):.3f}" for r in REGIONS), "", "", ""])
    return _common.markdown_table(header, body)


def sampling_coverage(data: Path, epochs: int, size: int) -> dict:
    """How often training patches hold each label: ``demo-seg``'s patches (cubes of ``size``) of
    ``epochs`` epochs from the training cases at ``data``, uniform and label-balanced crops.

    Returns ``{sampler: {label: {"patches": fraction of patches holding it, "voxels": its
    fraction of the patch voxels}}}``, and ``{"volumes": ...}`` the same fractions of the whole
    training volumes (where "patches" is the fraction of volumes holding the label)."""
    import numpy as np

    from revmed import config
    from revmed.data.training_patches import TrainingPatches

    out: dict = {}
    for sampler in ("random", "labels"):
        preset = config.load_preset(PRESET, [f'patch.sampler="{sampler}"',
                                             f"patch.size=[{size},{size},{size}]"])
        patches = TrainingPatches(data, preset)
        labels = np.concatenate([patches.epoch_patches(e)["label"] for e in range(epochs)])
        out[sampler] = {name: {"patches": float(np.mean((labels == v).any(axis=(1, 2, 3, 4)))),
                               "voxels": float(np.mean(labels == v))}
                        for name, v in patches.labels.labels.items()}
        volumes = [s["label"] for s in patches._samples]
    out["volumes"] = {name: {"patches": float(np.mean([(x == v).any() for x in volumes])),
                             "voxels": float(np.mean([np.mean(x == v) for x in volumes]))}
                      for name, v in patches.labels.labels.items()}
    return out


def phantom_proportions(seeds: range, shape=SHAPE) -> dict:
    """Tumour proportions of ``revmed synth brats-seg``'s phantom over ``seeds`` (one phantom
    each, alternating hemispheres): TC / WT, NCR / TC and the necrosis in voxels."""
    import numpy as np

    from revmed.data.synthetic.brain import brats_phantom

    rows = []
    for seed in seeds:
        _, labels, _ = brats_phantom(np.random.default_rng(seed), shape, (1.0, 1.0, 1.0),
                                     hemisphere=1.0 if seed % 2 else -1.0)
        n = {v: int((labels == v).sum()) for v in (1, 2, 4)}
        tc = n[1] + n[4]
        rows.append((tc / sum(n.values()), n[1] / max(tc, 1), n[1]))
    a = np.array(rows)
    return {key: {"mean": float(a[:, i].mean()), "min": float(a[:, i].min()),
                  "max": float(a[:, i].max())}
            for i, key in enumerate(("tc_of_wt", "ncr_of_tc", "ncr_voxels"))}


def coverage_table(coverage: dict[int, dict]) -> str:
    """One row per crop size and sampler, and one for the whole volumes."""
    first = next(iter(coverage.values()))
    names = list(first["volumes"])
    header = ["patches", *(f"{n}: patches holding it" for n in names),
              *(f"{n}: share of voxels" for n in names)]
    rows = []

    def row(title, c):
        rows.append([title, *(f"{c[n]['patches']:.2f}" for n in names),
                     *(f"{100 * c[n]['voxels']:.2f}%" for n in names)])

    for size, c in coverage.items():
        row(f"{size}³ uniform random crops", c["random"])
        row(f"{size}³ label-balanced crops", c["labels"])
    row("whole training volumes", first["volumes"])
    return _common.markdown_table(header, rows)


# --- the report ------------------------------------------------------------------------------

def pm(stats: dict | None, digits: int = 3) -> str:
    if not stats:
        return "–"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def sweep_table(rows: list[dict]) -> str:
    header = ["config", "params", "peak train MiB", "step MiB", "saved MiB", "train CPU s",
              "Dice ET", "Dice TC", "Dice WT"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["key"], "failed: " + r["error"][:80], *[""] * 7])
            continue

        def mib(key):
            return "–" if r.get(key) is None else f"{r[key]:.0f}"

        d = r.get("dice", {})
        body.append([r["label"], f"{r['params']:,}", mib("peak_train_mib"), mib("step_mib"),
                     "–" if r.get("saved_mib") is None else f"{r['saved_mib']:.1f}",
                     f"{r['train_cpu_s']:.0f}", pm(d.get("ET")), pm(d.get("TC")),
                     pm(d.get("WT"))])
    lines = _common.markdown_table(header, body).splitlines()
    lines[1] = "|:---|" + "|".join("---:" for _ in header[1:]) + "|"
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="sweep,demo",
                        help="comma-separated: sweep (the configurations), demo (demo-seg "
                             "through the CLI), sampling (how often demo-seg's training patches "
                             "of 48, 32 and 24 voxels hold each label, uniform vs "
                             "label-balanced crops), phantom (the tumour proportions of "
                             "revmed synth brats-seg over seeds 0-11)")
    parser.add_argument("--configs", default=None,
                        help="comma-separated keys (default: all): " + ", ".join(BY_KEY))
    parser.add_argument("--memory-only", default="",
                        help="comma-separated keys trained for 2 steps only: memory, no Dice")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimisation steps per configuration (default 200; quick 6)")
    parser.add_argument("--patch", type=int, default=None,
                        help="edge of the cubic training patch and inference window, a multiple "
                             "of 4 (default 32; quick 32)")
    parser.add_argument("--batch", type=int, default=2,
                        help="patches per step (>= 2: on a CPU batch-1 3D convolutions take a "
                             "much slower path)")
    parser.add_argument("--per-volume", type=int, default=4,
                        help="random patches per training volume and epoch")
    parser.add_argument("--cases", type=int, default=None,
                        help="synthetic cases; a fifth are the held-out test set, one validates "
                             "(unused here), the rest train (default 20; quick 10)")
    parser.add_argument("--demo-cases", type=int, default=6,
                        help="cases of the demo-seg run (the documented 6: 4 train, 1 val, "
                             "1 test)")
    parser.add_argument("--demo-seeds", default=None,
                        help="comma-separated synth seeds: run the demo once per seed (fresh "
                             "data, run and prediction each) and report per-region Dice per seed, "
                             "mean +- std and the worst seed (default: --seed only)")
    parser.add_argument("--demo-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a preset override for the demo's revmed train (repeatable), to "
                             "try a change as a user would run it")
    parser.add_argument("--demo-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the demo's commands (default: not set, so "
                             "PyTorch uses every core, as for a user)")
    parser.add_argument("--demo-load", type=int, default=0, metavar="N",
                        help="keep N single-threaded busy loops running during each demo, as "
                             "other work on the machine would (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per configuration process (default 1)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="configurations trained at the same time (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: " + ",".join(QUICK_CONFIGS) + ", 6 steps, 10 cases, "
                             "no demo")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep data, runs and predictions here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=_common.RESULTS / "segmentation.json")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = worker(json.loads(args.worker[0].read_text()))
        tmp = args.worker[1].with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(args.worker[1])
        return

    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    known = {"sweep", "demo", "sampling", "phantom"}
    if not parts <= known:
        parser.error(f"--parts: unknown part(s) {', '.join(sorted(parts - known))}")
    if args.quick:
        parts.discard("demo")
    keys = ([k.strip() for k in args.configs.split(",") if k.strip()] if args.configs
            else QUICK_CONFIGS if args.quick else list(BY_KEY))
    memory_only = {k.strip() for k in args.memory_only.split(",") if k.strip()}
    for k in [*keys, *memory_only]:
        if k not in BY_KEY:
            parser.error(f"unknown config {k!r}; choose from {', '.join(BY_KEY)}")
    steps = args.steps or (6 if args.quick else 200)
    patch = args.patch or 32
    cases = args.cases or (10 if args.quick else 20)
    if patch % 4 or patch > min(SHAPE):
        parser.error(f"--patch {patch}: must be a multiple of 4 and at most {min(SHAPE)}")
    if args.batch < 1 or steps < 2:
        parser.error("--batch must be >= 1 and --steps >= 2")

    temp = None
    if args.work is None:
        temp = tempfile.TemporaryDirectory(prefix="revmed-segmentation-")
        work = Path(temp.name)
    else:
        work = args.work.resolve()
        if work.exists() and any(work.iterdir()):
            parser.error(f"--work {work}: must be empty or new")
        work.mkdir(parents=True, exist_ok=True)

    import torch

    from revmed import config
    from revmed.data.synthetic import synthesize

    started = time.monotonic()
    machine = _common.machine("cpu")
    machine.update(worker_threads=args.threads, jobs=args.jobs,
                   load_average_at_start=os.getloadavg())
    payload: dict = {"benchmark": "segmentation", "machine": machine, "preset": PRESET,
                     "command": " ".join(["python", "benchmarks/segmentation.py", *sys.argv[1:]])}

    if "demo" in parts:
        seeds = ([int(s) for s in args.demo_seeds.split(",") if s.strip()] if args.demo_seeds
                 else [args.seed])
        demos = {}
        for seed in seeds:
            log(f"demo-seg through the CLI, synth seed {seed} (its own 240 s training limit)")
            (work / f"seed-{seed}").mkdir()
            with busy_loops(args.demo_load):
                demo = run_demo(work / f"seed-{seed}", args.demo_cases, seed,
                                args.demo_threads, tuple(args.demo_set))
            demo["busy_loops"] = args.demo_load
            demo["load_average_after"] = os.getloadavg()
            demos[seed] = demo
        payload["demo"] = demos[seeds[0]] if len(seeds) == 1 else None
        payload["demos"] = {str(k): v for k, v in demos.items()}

    if "phantom" in parts:
        found = payload["phantom"] = phantom_proportions(range(12))
        print("\nbrats-seg phantom, seeds 0-11 at 64^3 (mean [min, max]): "
              + ", ".join(f"{k} {v['mean']:.3g} [{v['min']:.3g}, {v['max']:.3g}]"
                          for k, v in found.items()))

    if "sampling" in parts:
        data = work / "sampling-data"
        dataset = synthesize("brats-seg", data, cases=args.demo_cases, seed=args.seed, shape=SHAPE)
        train = config.load_preset(PRESET).train
        epochs = train.epochs + train.epochs_decay
        coverage = {size: sampling_coverage(data, epochs, size) for size in (48, 32, 24)}
        payload["sampling"] = {str(k): v for k, v in coverage.items()}
        print(f"\nTraining patches of demo-seg ({epochs} epochs of {len(dataset.splits['train'])} "
              f"training cases, synth seed {args.seed}; 48³ is the preset's crop):\n")
        print(coverage_table(coverage))

    rows: list[dict] = []
    if "sweep" in parts:
        data = work / "data"
        dataset = synthesize("brats-seg", data, cases=cases, seed=args.seed, shape=SHAPE)
        splits = {k: len(v) for k, v in dataset.splits.items()}
        train_cases = splits["train"]
        payload["sweep"] = {
            "cases": cases, "splits": splits, "shape": list(SHAPE), "patch": patch,
            "batch": args.batch, "per_volume": args.per_volume, "steps": steps,
            "patches_per_epoch": train_cases * args.per_volume,
            "epochs": steps / max(1, train_cases * args.per_volume // args.batch),
            "test_cases": [c.name for c in dataset.splits["test"]],
            "memory_only": sorted(memory_only & set(keys)),
            "mmap_threshold": MMAP_THRESHOLD,
            "lr": config.load_preset(PRESET).train.lr,
        }
        log(f"sweep: {len(keys)} configs, {steps} steps of {args.batch} x {patch}^3, "
            f"{splits} cases, {args.jobs} job(s) x {args.threads} thread(s)")
        (work / "specs").mkdir()

        def one(key: str) -> dict:
            cfg = BY_KEY[key]
            only_memory = key in memory_only
            spec = {"config": asdict(cfg), "data": str(data), "patch": patch,
                    "batch": args.batch, "per_volume": args.per_volume, "seed": args.seed,
                    "steps": 2 if only_memory else steps, "score": not only_memory,
                    "threads": args.threads}
            log(f"  start {key}")
            r = run_worker(spec, work / "specs" / f"{key}.json")
            r["memory_only"] = only_memory
            log(f"  done  {key}: " + (r["error"] if "error" in r else
                                      f"{r['train_cpu_s']:.0f} CPU s, peak "
                                      f"{r['peak_train_mib'] or 0:.0f} MiB, WT "
                                      f"{pm(r.get('dice', {}).get('WT'))}"))
            return r

        order = sorted(keys, key=lambda k: -COST.get(k, 1.0))
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            by_key = dict(zip(order, pool.map(one, order)))
        rows = [by_key[k] for k in keys]
        payload["results"] = rows
        scored = [r for r in rows if "cases" in r]
        if scored:
            payload["chance"] = summary({c: {k: v for k, v in d.items() if k.startswith("chance")}
                                         for c, d in scored[0]["cases"].items()})

    payload["total_s"] = time.monotonic() - started
    payload["machine"]["load_average_at_end"] = os.getloadavg()
    _common.write_json(args.json, payload)

    if rows:
        sw = payload["sweep"]
        print(f"\nSegmentation on synthetic BraTS ({sw['splits']['train']} training, "
              f"{sw['splits']['test']} held-out test volumes of {'x'.join(map(str, SHAPE))}); "
              f"{steps} steps of {args.batch} x {patch}^3 patches per config, Adam lr "
              f"{sw['lr']:g}; CPU, {args.threads} thread(s) per config:\n")
        print(sweep_table(rows))
        ch = payload.get("chance")
        if ch:
            print(f"\nChance (region predicted everywhere inside the brain): ET "
                  f"{pm(ch['chance_ET'])}, TC {pm(ch['chance_TC'])}, WT {pm(ch['chance_WT'])}")
        for r in rows:
            if "error" in r:
                print(f"\n{r['key']} failed:\n  " + "\n  ".join(r.get("stderr_tail", [])))
    demo = payload.get("demo")
    if payload.get("demos") and len(payload["demos"]) > 1:
        print("\ndemo-seg as shipped, through the CLI, one run per synth seed "
              "(Dice of each held-out case):\n")
        print(seeds_table(payload["demos"]))
    elif demo:
        print("\ndemo-seg as shipped, through the CLI:")
        if "error" in demo:
            print(f"  failed: {demo['error']}\n  " + "\n  ".join(demo.get("stderr_tail", [])))
        else:
            s = demo["summary"]
            print(f"  {demo['epochs']} epochs, {demo['steps']} steps in "
                  f"{demo['seconds']['train']:.0f} s; best epoch {demo['best_epoch']}")
            print("  test Dice: " + ", ".join(
                f"{r} {s[r]['dice']['mean']:.3f}" for r in REGIONS))
            print(f"  chance WT (tumour predicted everywhere inside the brain): "
                  f"{demo['chance_mean']:.3f}")
    print(f"\ntotal {payload['total_s'] / 60:.1f} min; JSON: {args.json}")
    del torch


if __name__ == "__main__":
    main()
