"""Image quality of the 3D RevGAN against core depth, objective and GAN term, at a fixed budget.

Two synthetic chest-CT tasks (``revmed synth``), each with held-out test volumes:

* ``sr``: super-resolution, 2x in-plane and 4x in z (preset ``demo-sr``). Each test volume is
  degraded by block means over the preset's factors (what ``revmed demo`` does), super-resolved
  by ``F`` and scored against the original; trilinear and tricubic (cubic B-spline) upsampling
  of the same low-resolution volume are the baselines.
* ``da``: kernel adaptation B50f -> B30f (preset ``demo-da``): ``F`` of the test B50f volume
  against its B30f partner; the baseline ("identity") is the B50f volume itself.

Every trained configuration runs the same number of optimisation steps (``--steps``, rounded up
to whole epochs; no time limit), so its quality does not depend on how busy the machine is.
Each one trains in a fresh subprocess, which reports the peak resident memory of training above
what the process held once the data was loaded and the model built (VmHWM after resetting it
through /proc/self/clear_refs), the generator's parameter count and the training time, then
translates the test volumes with ``best.pt`` (best validation PSNR) and scores them with
``revmed.evaluation.evaluate``, twice: in HU (PSNR and SSIM with a 1500 HU data range, MAE in
HU, inside the body mask for MAE) and the papers' way (``window``: reference, prediction and
baselines clipped to the presets' [-1150, 350] HU window and mapped to [-1, 1], data range 2),
both over the whole volume.

    python benchmarks/quality.py                       # both tasks, every configuration
    python benchmarks/quality.py --quick               # a smoke test (under two minutes)
    python benchmarks/quality.py --tasks sr --configs d0,2r,demo --steps 100
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import _common

#: PSNR and SSIM data range in HU: the width of the presets' [-1150, 350] window.
DATA_RANGE = 1500.0
#: The presets' window, for the papers' protocol (scores on [-1, 1] windowed data).
WINDOW = (-1150.0, 350.0)
#: Patches per optimisation step (on a CPU, batch-1 3D convolutions take a much slower path).
BATCH = 4
SHAPE = (64, 64, 48)
TASK_PRESET = {"sr": "demo-sr", "da": "demo-da"}
TASK_SYNTH = {"sr": "chestct-sr", "da": "chestct-da"}


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    tasks: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    baseline: bool = False
    #: whether ``--set`` and the sweep's ``model.residual=false`` apply (not to the shipped demo)
    sweep: bool = True


CONFIGS = [
    Config("trilinear", "trilinear", ("sr",), baseline=True),
    Config("tricubic", "tricubic (cubic B-spline)", ("sr",), baseline=True),
    Config("identity", "identity (B50f input)", ("da",), baseline=True),
    Config("d0", "depth 0 (srcnn-relu encoder)", ("sr", "da"), ("model.depth=0",)),
    Config("2r", "+2R", ("sr", "da"), ("model.depth=2",)),
    Config("4r", "+4R", ("sr", "da"), ("model.depth=4",)),
    Config("8r", "+8R", ("sr", "da"), ("model.depth=8",)),
    Config("d0-res", "depth 0, residual", ("sr", "da"), ("model.depth=0", "model.residual=true")),
    Config("2r-res", "+2R, residual", ("sr", "da"), ("model.depth=2", "model.residual=true")),
    Config("2r-res-nogan", "+2R, residual, w/o GAN", ("sr", "da"),
           ("model.depth=2", "model.residual=true", "train.lambda_gan=0")),
    Config("2r-nogan", "+2R w/o GAN", ("sr", "da"), ("model.depth=2", "train.lambda_gan=0")),
    Config("2r-unpaired", "+2R unpaired (CycleGAN)", ("sr", "da"),
           ("model.depth=2", "train.objective='unpaired'")),
    Config("demo", "demo-sr as shipped (+2R, residual)", ("sr",), sweep=False),
    # encoder variants (model.encoder) and the critic's stride-2 layers, with the residual
    # option that every demo preset ships with
    Config("d0-res-linear", "depth 0, residual, linear SRCNN encoder", ("sr", "da"),
           ("model.depth=0", "model.residual=true", "model.encoder='srcnn'")),
    Config("2r-res-linear", "+2R, residual, linear SRCNN encoder", ("sr", "da"),
           ("model.depth=2", "model.residual=true", "model.encoder='srcnn'")),
    Config("4r-res-linear", "+4R, residual, linear SRCNN encoder", ("sr", "da"),
           ("model.depth=4", "model.residual=true", "model.encoder='srcnn'")),
    Config("8r-res-linear", "+8R, residual, linear SRCNN encoder", ("sr", "da"),
           ("model.depth=8", "model.residual=true", "model.encoder='srcnn'")),
    Config("2r-res-critic2", "+2R, residual, critic with 2 stride-2 layers", ("sr", "da"),
           ("model.depth=2", "model.residual=true", "model.disc_layers=2")),
    Config("d0-res-strided", "depth 0, residual, strided", ("sr", "da"),
           ("model.depth=0", "model.residual=true", "model.encoder='strided'")),
    Config("2r-res-strided", "+2R, residual, strided", ("sr", "da"),
           ("model.depth=2", "model.residual=true", "model.encoder='strided'")),
    Config("4r-res-strided", "+4R, residual, strided", ("sr", "da"),
           ("model.depth=4", "model.residual=true", "model.encoder='strided'")),
    Config("8r-res-strided", "+8R, residual, strided", ("sr", "da"),
           ("model.depth=8", "model.residual=true", "model.encoder='strided'")),
    Config("2r-strided", "+2R, strided, tanh (the authors' chest-CT generator)", ("sr", "da"),
           ("model.depth=2", "model.encoder='strided'", "model.residual=false")),
]
BY_KEY = {c.key: c for c in CONFIGS}
#: Rough relative cost of a step, to start the slow configs first when ``--jobs`` > 1.
COST = {"8r": 4.0, "4r": 2.0, "2r-unpaired": 1.8, "2r": 1.2, "demo": 1.2, "2r-nogan": 1.0,
        "d0": 0.3, "8r-res-strided": 1.5, "4r-res-strided": 1.0, "8r-res-linear": 4.0,
        "4r-res-linear": 2.0, "2r-res-linear": 1.2, "2r-res": 1.2, "2r-res-critic2": 1.1}
QUICK_CONFIGS = {"sr": ["trilinear", "tricubic", "d0", "demo"], "da": ["identity", "2r"]}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------------

def prepare_task(task: str, root: Path, cases: int, seed: int) -> dict:
    """Synthesise the dataset; for SR also degrade the test volumes to low resolution."""
    from revmed import config
    from revmed.data.synthetic import synthesize

    data = root / "data"
    dataset = synthesize(TASK_SYNTH[task], data, cases=cases, seed=seed, shape=SHAPE)
    test = dataset.splits["test"]
    info = {"data": str(data), "reference": str(data / "test" / "Y"),
            "mask": str(data / "test" / "masks"),
            "splits": {k: len(v) for k, v in dataset.splits.items()},
            "test_cases": [c.name for c in test]}
    if task == "sr":
        factors = config.load_preset(TASK_PRESET[task]).data.sr_factors
        _common.write_low_resolution(test, factors, root / "low_res")
        info["input"] = str(root / "low_res")
        info["factors"] = list(factors)
    else:
        info["input"] = str(data / "test" / "X")
    return info


def scores(report) -> tuple[dict, dict]:
    """(summary, per-case metrics) of every method of an evaluation report."""
    payload = report.to_json()
    cases = {c["case"]: {m: c[m] for m in payload["methods"]} for c in payload["cases"]}
    return payload["summary"], cases


def windowed(prediction, reference, **options) -> dict:
    """The papers' protocol: ``{method: summary}`` on [-1, 1] windowed data."""
    from revmed.evaluation import evaluate

    return scores(evaluate(prediction, reference, window=WINDOW, **options))[0]


def baseline_rows(task: str, info: dict, root: Path) -> dict[str, dict]:
    """Rows of the untrained baselines, scored exactly like the trained models."""
    from revmed.evaluation import evaluate
    from revmed.io import read_volume, write_volume, zoom_affine
    from revmed.transforms import upsample

    if task == "da":
        report = evaluate(info["input"], info["reference"], mask=info["mask"],
                          data_range=DATA_RANGE)
        summary, cases = scores(report)
        paper = windowed(info["input"], info["reference"])
        return {"identity": {"summary": summary["prediction"], "window": paper["prediction"],
                             "cases": {k: v["prediction"] for k, v in cases.items()}}}
    # evaluate() needs a prediction: the tricubic volumes, written here, which also checks
    # that the library's "tricubic" baseline row is the same computation.
    factors = info["factors"]
    folder = root / "tricubic"
    folder.mkdir(exist_ok=True)
    for name in info["test_cases"]:
        low = read_volume(Path(info["input"]) / f"{name}.nii.gz")
        ref = read_volume(Path(info["reference"]) / f"{name}.nii.gz")
        up = upsample(low.array, factors, "bspline", shape=ref.shape)
        write_volume(low.with_array(up, zoom_affine(low.affine, factors)),
                     folder / f"{name}.nii.gz")
    report = evaluate(folder, info["reference"], mask=info["mask"], input=info["input"],
                      baselines=("trilinear", "tricubic"), data_range=DATA_RANGE)
    summary, cases = scores(report)
    check = abs(summary["prediction"]["psnr"]["mean"] - summary["tricubic"]["psnr"]["mean"])
    if check > 1e-3:
        log(f"warning: tricubic written here and evaluate()'s tricubic baseline differ by "
            f"{check:.4f} dB")
    paper = windowed(folder, info["reference"], input=info["input"],
                     baselines=("trilinear", "tricubic"))
    return {name: {"summary": summary[name], "window": paper[name],
                   "cases": {k: v[name] for k, v in cases.items()}}
            for name in ("trilinear", "tricubic")}


# --- one trained configuration (a fresh process) ---------------------------------------------

def worker(spec: dict) -> dict:
    """Train one configuration, measure it, translate and score the test volumes."""
    import torch

    from revmed import config
    from revmed.engine.setup import setup_training
    from revmed.evaluation import evaluate
    from revmed.inference import Translator
    from revmed.io import read_volume, write_volume

    torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    preset = config.load_preset(spec["preset"], spec["overrides"])
    trainer = setup_training(preset, spec["data"], run_dir, torch.device("cpu"))
    generator = sum(p.numel() for p in trainer.model.parameters())
    critics = sum(p.numel() for d in trainer.training.critics.values() for p in d.parameters())
    gc.collect()
    base_kib = _common.status_kib("VmRSS")
    reset = _common.reset_peak_rss()
    start, cpu_start = time.monotonic(), _common.cpu_seconds()
    trainer.fit()
    train_s, cpu_s = time.monotonic() - start, _common.cpu_seconds() - cpu_start
    if reset and base_kib is not None:
        peak_kib, peak_from = _common.status_kib("VmHWM"), "VmHWM reset after data loading"
    else:  # ru_maxrss: the peak since the process started (kiB on Linux)
        peak_kib, peak_from = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    epochs = [json.loads(line) for line in
              (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    best = max(epochs, key=lambda r: r.get("val_psnr", -math.inf))

    translator = Translator.load(run_dir / "best.pt", "cpu")
    pred_dir = run_dir / "pred"
    pred_dir.mkdir(exist_ok=True)
    infer_start = time.monotonic()
    for name in spec["test_cases"]:
        volume = read_volume(Path(spec["input"]) / f"{name}.nii.gz")
        write_volume(translator.translate(volume), pred_dir / f"{name}.nii.gz")
    infer_s = time.monotonic() - infer_start
    report = evaluate(pred_dir, spec["reference"], mask=spec["mask"], data_range=DATA_RANGE)
    summary, cases = scores(report)
    paper = windowed(pred_dir, spec["reference"])
    inference = compare_inference(translator, spec, pred_dir, run_dir)
    return {
        "params": generator, "critic_params": critics,
        "base_rss_mib": None if base_kib is None else base_kib / 1024,
        "peak_rss_mib": peak_kib / 1024,
        "peak_train_mib": (peak_kib - base_kib) / 1024 if base_kib is not None else None,
        "peak_from": peak_from,
        "train_s": train_s, "train_cpu_s": cpu_s, "infer_s": infer_s,
        "steps": sum(r["steps"] for r in epochs), "epochs": len(epochs),
        "best_epoch": best["epoch"], "best_val_psnr": best.get("val_psnr"),
        "last_epoch": epochs[-1],
        "summary": summary["prediction"], "window": paper["prediction"],
        "cases": {k: v["prediction"] for k, v in cases.items()},
        "inference": inference,
    }


def compare_inference(translator, spec: dict, pred_dir: Path, run_dir: Path) -> dict:
    """The test volumes of a run translated more ways beside the default (frozen norms in
    tiles, fp32; in ``pred_dir``): blended windows at the preset's overlap with per-window
    instance norms (how older checkpoints run), the same windows side by side without
    overlap (one evaluation per voxel, as tiles: what the blend adds), and tiles under bf16
    autocast; PSNR in HU of each, and the largest and mean |HU| difference of bf16 from
    fp32."""
    import numpy as np

    from revmed.evaluation import evaluate
    from revmed.io import read_volume, write_volume

    import torch

    from revmed.runtime import onednn_supports

    if not translator.tiled:
        return {}
    out = {}
    ways = [("windows", {"tiling": "windows"}),
            ("windows-unblended", {"tiling": "windows", "overlap": 0.0})]
    if translator.device.type != "cpu" or onednn_supports(torch.bfloat16):
        ways.append(("bf16", {"precision": "bf16"}))  # else revmed would run it in fp32
    for way, options in ways:
        folder = run_dir / f"pred-{way}"
        folder.mkdir(exist_ok=True)
        start = time.monotonic()
        for name in spec["test_cases"]:
            volume = read_volume(Path(spec["input"]) / f"{name}.nii.gz")
            write_volume(translator.translate(volume, **options), folder / f"{name}.nii.gz")
        report = evaluate(folder, spec["reference"], mask=spec["mask"], data_range=DATA_RANGE)
        out[way] = {"summary": scores(report)[0]["prediction"],
                    "seconds": time.monotonic() - start}
    if "bf16" not in out:
        return out
    errors = [np.abs(read_volume(run_dir / "pred-bf16" / f"{n}.nii.gz").array
                     - read_volume(pred_dir / f"{n}.nii.gz").array)
              for n in spec["test_cases"]]
    out["bf16_max_hu"] = float(max(e.max() for e in errors))
    out["bf16_mean_hu"] = float(np.mean([e.mean() for e in errors]))
    return out


def inference_table(rows: dict[str, dict]) -> str:
    """Tiles (frozen norms) against blended windows and bf16, per trained configuration."""
    lines = ["| config | PSNR tiles (dB) | PSNR windows (dB) | tiles - windows | "
             "tiles - windows without overlap | PSNR tiles bf16 | "
             "bf16 vs fp32: max / mean abs HU |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, row in rows.items():
        inf = row.get("inference")
        if not inf:
            continue
        tiles = row["summary"]["psnr"]["mean"]
        windows = inf["windows"]["summary"]["psnr"]["mean"]
        unblended = inf.get("windows-unblended")
        unblended = ("-" if unblended is None
                     else f"{tiles - unblended['summary']['psnr']['mean']:+.3f}")
        if "bf16" in inf:
            bf16 = (f"{inf['bf16']['summary']['psnr']['mean']:.3f} | "
                    f"{inf['bf16_max_hu']:.1f} / {inf['bf16_mean_hu']:.2f}")
        else:  # a CPU without oneDNN bf16 convolutions: revmed runs fp32 there
            bf16 = "- | -"
        lines.append(f"| {key} | {tiles:.3f} | {windows:.3f} | {tiles - windows:+.3f} | "
                     f"{unblended} | {bf16} |")
    return "\n".join(lines)


def run_worker(spec: dict, spec_path: Path) -> dict:
    spec_path.write_text(json.dumps(spec))
    out_path = spec_path.with_suffix(".out.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path),
           str(out_path)]
    # glibc serves allocations of 1 MiB or more with their own mappings and unmaps them when
    # freed, so the resident size follows live tensors rather than malloc's cache.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
           "OMP_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not out_path.is_file():
        lines = (done.stderr.strip() or "(no output)").splitlines()
        return {"error": lines[-1], "stderr_tail": lines[-15:]}
    return json.loads(out_path.read_text())


# --- the budget ------------------------------------------------------------------------------

def budget(steps: int, train_cases: int, epochs: int) -> dict:
    """Patches per volume so ``epochs`` epochs make at least ``steps`` steps of ``BATCH``."""
    epochs = max(1, min(epochs, steps))
    per_epoch = math.ceil(steps / epochs)
    per_volume = math.ceil(per_epoch * BATCH / train_cases)
    return {"epochs": epochs, "per_volume": per_volume, "batch_size": BATCH,
            "steps": epochs * (train_cases * per_volume // BATCH)}


def budget_overrides(plan: dict) -> list[str]:
    return ["train.time_limit=0", f"train.epochs={plan['epochs']}", "train.epochs_decay=0",
            f"train.batch_size={plan['batch_size']}", f"patch.per_volume={plan['per_volume']}"]


# --- the report ------------------------------------------------------------------------------

def pm(summary: dict, metric: str, digits: int) -> str:
    s = summary.get(metric) or {}
    if s.get("mean") is None:
        return "–"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def table(rows: list[dict]) -> str:
    header = ["config", "params", "peak train MiB", "train CPU s", "PSNR dB", "SSIM", "MAE HU",
              "PSNR [-1,1]", "SSIM [-1,1]"]
    body = []
    for row in rows:
        if "error" in row:
            body.append([row["label"], "failed: " + row["error"][:80], *[""] * 7])
            continue
        summary = row["summary"]
        trained = "params" in row
        body.append([
            row["label"],
            f"{row['params']:,}" if trained else "–",
            f"{row['peak_train_mib']:.0f}" if trained and row["peak_train_mib"] is not None
            else "–",
            f"{row['train_cpu_s']:.0f}" if trained else "–",
            pm(summary, "psnr", 2), pm(summary, "ssim", 4), pm(summary, "mae", 1),
            pm(row.get("window", {}), "psnr", 2), pm(row.get("window", {}), "ssim", 4)])
    lines = _common.markdown_table(header, body).splitlines()
    lines[1] = "|:---|" + "|".join("---:" for _ in header[1:]) + "|"
    return "\n".join(lines)


def versus(row: dict, base: dict, metric: str = "psnr") -> dict:
    """Per-case differences ``row - base`` of ``metric``: mean, std and wins."""
    diffs = [row["cases"][c][metric] - base["cases"][c][metric] for c in row["cases"]]
    mean = sum(diffs) / len(diffs)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / len(diffs))
    return {"mean": mean, "std": std, "wins": sum(d > 0 for d in diffs), "n": len(diffs)}


def claim_lines(rows: dict[str, dict]) -> list[str]:
    """The demo claim: the shipped demo-sr preset against trilinear and tricubic (PSNR)."""
    demo = rows.get("demo")
    if not demo or "error" in demo:
        return []
    out = []
    for name in ("trilinear", "tricubic"):
        if name not in rows:
            continue
        v = versus(demo, rows[name])
        verdict = "beats" if v["mean"] > 0 and v["wins"] == v["n"] else (
            "beats on average" if v["mean"] > 0 else "does NOT beat")
        out.append(f"demo-sr vs {name}: PSNR {v['mean']:+.2f} ± {v['std']:.2f} dB per case, "
                   f"higher on {v['wins']}/{v['n']} test volumes: {verdict} {name}")
    return out


# --- main ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sr,da", help="comma-separated: sr, da")
    parser.add_argument("--configs", default=None,
                        help="comma-separated keys (default: all for each task): "
                             + ", ".join(c.key for c in CONFIGS))
    parser.add_argument("--steps", type=int, default=None,
                        help="optimisation steps per trained config (default 200; quick 8), "
                             "rounded up to whole epochs")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs the steps are split into (validation and best.pt "
                             "selection after each; default 4; quick 1)")
    parser.add_argument("--cases", type=int, default=None,
                        help="synthetic cases per task; a fifth are held out for testing, one "
                             "validates (default 30; quick 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="preset override for every trained config but the shipped demo, "
                             "e.g. model.residual=true (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 8 steps, 10 cases, configs "
                             + "; ".join(f"{t}: {','.join(c)}" for t, c in QUICK_CONFIGS.items()))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per training process (default 1: robust on a "
                             "shared machine, where idle OpenMP threads spin)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="configs trained at the same time, each in its own process "
                             "(default 2: one per core of the 2-core CPU)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep data, runs and predictions here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=_common.RESULTS / "quality.json")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        spec = json.loads(args.worker[0].read_text())
        result = worker(spec)
        tmp = args.worker[1].with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(args.worker[1])
        return

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in TASK_PRESET:
            parser.error(f"--tasks: unknown task {t!r} (sr, da)")
    steps = args.steps or (8 if args.quick else 200)
    epochs = args.epochs or (1 if args.quick else 4)
    cases = args.cases or (10 if args.quick else 30)
    if args.configs:
        keys = [k.strip() for k in args.configs.split(",") if k.strip()]
        for k in keys:
            if k not in BY_KEY:
                parser.error(f"--configs: unknown config {k!r}; choose from "
                             + ", ".join(BY_KEY))
    else:
        keys = None

    temp = None
    if args.work is None:
        temp = tempfile.TemporaryDirectory(prefix="revmed-quality-")
        work = Path(temp.name)
    else:
        work = args.work
        if work.exists() and any(work.iterdir()):
            parser.error(f"--work {work}: must be empty or new")
        work.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    machine = _common.machine("cpu")
    machine["worker_threads"] = args.threads
    machine["jobs"] = args.jobs
    results: dict = {"benchmark": "quality", "command": " ".join(["python"] + sys.argv),
                     "machine": machine, "data_range": DATA_RANGE, "shape": list(SHAPE),
                     "cases": cases, "seed": args.seed, "extra_overrides": args.extra,
                     "tasks": {}}
    try:
        plans: dict[str, dict] = {}
        jobs: list[tuple[str, Config, dict, Path]] = []
        for task in tasks:
            wanted = keys or (QUICK_CONFIGS[task] if args.quick else
                              [c.key for c in CONFIGS if task in c.tasks])
            configs = [BY_KEY[k] for k in wanted if task in BY_KEY[k].tasks]
            if not configs:
                continue
            root = work / task
            log(f"{task}: synthesising {cases} {TASK_SYNTH[task]} cases {SHAPE}")
            info = prepare_task(task, root, cases, args.seed)
            plan = budget(steps, info["splits"]["train"], epochs)
            log(f"{task}: splits {info['splits']}; {plan['steps']} steps per config "
                f"({plan['epochs']} epochs x {info['splits']['train']} volumes x "
                f"{plan['per_volume']} patches / batch {BATCH})")
            plans[task] = {"info": info, "plan": plan, "configs": configs, "rows": {}}
            (root / "specs").mkdir(exist_ok=True)
            for cfg in configs:
                if cfg.baseline:
                    continue
                overrides = list(cfg.overrides) + budget_overrides(plan)
                if cfg.sweep:
                    overrides = (["model.residual=false"] if task == "sr" else []) \
                        + overrides + args.extra
                spec = {"preset": TASK_PRESET[task], "overrides": overrides,
                        "data": info["data"], "run_dir": str(root / "runs" / cfg.key),
                        "input": info["input"], "reference": info["reference"],
                        "mask": info["mask"], "test_cases": info["test_cases"],
                        "threads": args.threads}
                jobs.append((task, cfg, spec, root / "specs" / f"{cfg.key}.json"))
            if any(c.baseline for c in configs):
                log(f"{task}: scoring the baselines")
                baselines = baseline_rows(task, info, root)
                for cfg in configs:
                    if cfg.baseline:
                        plans[task]["rows"][cfg.key] = {"label": cfg.label,
                                                        **baselines[cfg.key]}

        def train(job):
            task, cfg, spec, spec_path = job
            log(f"{task}: training {cfg.key} ({cfg.label})")
            row = {"label": cfg.label, "overrides": spec["overrides"],
                   **run_worker(spec, spec_path)}
            if "error" in row:
                log(f"{task}: {cfg.key} FAILED: {row['error']}")
            else:
                log(f"{task}: {cfg.key}: {row['steps']} steps, {row['train_cpu_s']:.0f} CPU s "
                    f"({row['train_s']:.0f} s wall), PSNR {pm(row['summary'], 'psnr', 2)} dB")
            return row

        # the slowest (deepest) configs first, so parallel jobs finish together
        order = sorted(range(len(jobs)), key=lambda i: -COST.get(jobs[i][1].key, 1.0))
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            done = dict(zip(order, pool.map(train, [jobs[i] for i in order])))
        for i, (task, cfg, _, _) in enumerate(jobs):
            plans[task]["rows"][cfg.key] = done[i]

        for task, state in plans.items():
            rows = {c.key: state["rows"][c.key] for c in state["configs"]}
            steps_done = {r["steps"] for r in rows.values() if "steps" in r}
            if len(steps_done) > 1:
                log(f"{task}: warning: configs ran different step counts {sorted(steps_done)}")
            results["tasks"][task] = {
                "preset": TASK_PRESET[task], "budget": state["plan"],
                "splits": state["info"]["splits"], "test_cases": state["info"]["test_cases"],
                "claim": claim_lines(rows),
                "rows": [{"config": k, **v} for k, v in rows.items()]}
            _print_task(task, results["tasks"][task], rows)
    finally:
        if temp is not None:
            temp.cleanup()
    results["total_s"] = time.monotonic() - started
    _common.write_json(args.json, results)
    print(f"\nTotal {results['total_s'] / 60:.1f} min. JSON: {args.json}")


def _print_task(task: str, payload: dict, rows: dict[str, dict]) -> None:
    plan = payload["budget"]
    what = {"sr": "super-resolution 2x2x4 (demo-sr)", "da": "kernel adaptation B50f -> B30f "
            "(demo-da)"}[task]
    n = len(payload["test_cases"])
    print(f"\n## {task}: {what}, {plan['steps']} steps of batch {plan['batch_size']}, "
          f"{n} held-out volumes (mean ± std over volumes; PSNR/SSIM in HU with range "
          f"{DATA_RANGE:.0f} HU, and the papers' way on data windowed to {WINDOW} and mapped "
          "to [-1, 1]; whole volumes)\n")
    print(table(list(rows.values())))
    for line in payload["claim"]:
        print(f"\n{line}")
    trained = {key: row for key, row in rows.items() if row.get("inference")}
    if trained:
        print("\nInference of the same best.pt: frozen norms in tiles (the default), blended "
              "windows with per-window norms (overlap as the preset, and none), tiles under "
              "bf16; PSNR in HU, mean over volumes:\n")
        print(inference_table(trained))


if __name__ == "__main__":
    main()
