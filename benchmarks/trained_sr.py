"""Trained super-resolution on real MRI, side by side: today's defaults against the defaults of
an older revmed, and each change between them on its own.

Data (real scans, none made here): two 1 mm T1 head MRIs, each cut in two halves along its
first axis. The first halves are the training set (an hr-only dataset, ``revmed train``
simulates the low-resolution input by block means over the preset's factors), the last quarter
of each first half along the second axis its validation set; the second halves are the test
set, never seen in training:

* ``t1mm``: one patient's T1 (Seg3D sample data, MIT licence), ``seg3D/MR.nii.gz`` of a clone
  of https://github.com/neurolabusc/VolumeRenderingData (``--volume-rendering-data``),
  1.0 x 0.9 x 0.9 mm;
* ``mni``: the MNI ICBM152 2009a T1 template (nilearn's copy; an average of 152 adults), 1 mm,
  the brain's box.

Each volume is scaled so that its 99.9th percentile is 1000 and the preset's window set to
[0, 1200]. Every configuration runs ``revmed train --preset demo-sr`` (2x2x4, the demo's
network) for the same wall time (``--time-limit``, 270 s, with ``train.epochs`` high enough
that time, not epochs, ends it), then ``revmed infer`` of each test half's block-mean
low-resolution version with ``best.pt``; scored inside each test half's head mask (Otsu, holes
filled): PSNR with a data range of 1000 and 3D SSIM over the mask's bounding box, against
tricubic (cubic B-spline) interpolation of the same input.

Configurations (``--configs``):

* ``today``: this checkout's defaults (critics of 2 stride-2 layers, normalisation statistics
  measured after every epoch, tiled inference with them frozen);
* ``windows``: ``today``'s ``best.pt`` run in blended sliding windows (``revmed infer
  --windows``): the tiling change on its own, at inference;
* ``critic3``: ``today`` with critics of 3 stride-2 layers (``--set model.disc_layers=3``);
* ``no-statistics``: ``today`` with the statistics never measured, so validation and inference
  run in windows: the statistics and tiling changes together, in training and inference;
* ``before``: another checkout's revmed (``--before PATH``, e.g. a worktree of 257e549, the
  last commit before the tiling, critic and statistics changes), its own demo-sr preset and its
  inference (windows). That checkout needs ``revmed/cli`` and ``revmed/presets`` links to its
  ``cli`` and ``presets`` folders, since it runs from source rather than installed.

Each configuration runs once per seed (``--seeds``), one after the other (the machine should
be otherwise idle: a time budget measures the machine too). Results go to ``--work`` as one
JSON file per run, so a stopped benchmark continues where it stopped.

    python benchmarks/trained_sr.py --volume-rendering-data ../VolumeRenderingData \\
        --before ../revmed-257e549 --seeds 0,1,2          # 15 runs of ~5 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Voxel factors of the demo-sr preset (i, j, k).
FACTORS = (2, 2, 4)
#: Each volume's 99.9th percentile is mapped to this value.
SCALE = 1000.0
WINDOW = (0.0, 1200.0)
CONFIGS = ("today", "windows", "critic3", "no-statistics", "before")
#: Configurations that run inference on another configuration's training.
SHARED_TRAINING = {"windows": "today"}
VOLUMES = ("t1mm", "mni")


def split_volume(array: np.ndarray) -> dict[str, np.ndarray]:
    """``train``, ``val`` and ``test`` parts of an ``(I, J, K)`` volume: the first half along
    i (its last quarter along j for validation), the second half for testing; every edge a
    multiple of 4 (the largest factor)."""
    shape = [s - s % 8 for s in array.shape]
    array = array[: shape[0], : shape[1], : shape[2]]
    half, quarter = shape[0] // 2, (shape[1] // 4) // 4 * 4
    first = array[:half]
    return {"train": first[:, : shape[1] - quarter], "val": first[:, shape[1] - quarter:],
            "test": array[half:]}


def prepare(work: Path, volume_rendering_data: Path | None) -> Path:
    """Write the dataset (hr-only) and the test cases; returns the dataset folder."""
    from selfsr import head_mask, load_case, write_case

    from revmed.transforms import downsample

    root = work / "data"
    if (root / "dataset.toml").is_file():
        return root
    for name in VOLUMES:
        array, spacing, _ = load_case(name, volume_rendering_data=volume_rendering_data)
        array = array * (SCALE / float(np.percentile(array, 99.9)))
        parts = split_volume(array)
        for split in ("train", "val"):
            write_case(parts[split], spacing, root / split / "Y" / f"{name}.nii.gz")
        test = work / "test" / name
        write_case(parts["test"], spacing, test / "ref.nii.gz")
        write_case(head_mask(parts["test"]), spacing, test / "mask.nii.gz")
        write_case(downsample(parts["test"][None], FACTORS)[0], spacing, test / "low.nii.gz",
               FACTORS)
    (root / "dataset.toml").write_text('kind = "hr-only"\nunits = "a.u."\n')
    return root


def train_command(config: str, data: Path, run: Path, seed: int, args) -> tuple[list, dict]:
    """The command line and environment of one configuration's training."""
    sets = [f"train.time_limit={args.time_limit}", "train.epochs=10000",
            f"data.window=[{WINDOW[0]}, {WINDOW[1]}]"]
    if config == "critic3":
        sets.append("model.disc_layers=3")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    head = [sys.executable, "-m", "revmed"]
    if config == "no-statistics":
        head = [sys.executable, str(Path(__file__).resolve()), "--train-without-statistics"]
    if config == "before":
        env["PYTHONPATH"] = str(args.before.resolve())
    command = [*head, "train", "--preset", "demo-sr", "--data", str(data), "--out", str(run),
               "--seed", str(seed), "--device", "cpu", "--overwrite", "-q"]
    for item in sets:
        command += ["--set", item]
    return command, env


def train_without_statistics(argv: list[str]) -> None:
    """``revmed`` with argv, the training step's statistics measurement switched off."""
    from revmed.cli.app import main

    from revmed.engine.step import TrainingStep

    TrainingStep.calibrate = lambda self, patches, epoch: None
    sys.argv = ["revmed", *argv]
    main()


def epochs_run(run: Path) -> int:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return len([line for line in lines if line.strip()])


def infer(config: str, run: Path, low: Path, out: Path, args) -> float:
    command = [sys.executable, "-m", "revmed", "infer", str(low), "-o", str(out), "--model",
               str(run / "best.pt"), "--device", "cpu", "--overwrite", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if config == "windows":
        command.append("--windows")
    if config == "before":
        env["PYTHONPATH"] = str(args.before.resolve())
    start = time.monotonic()
    subprocess.run(command, check=True, env=env)
    return time.monotonic() - start


def score(prediction: Path | None, case: Path) -> dict[str, float]:
    """Foreground PSNR (data range ``SCALE``) and SSIM over the mask's box, of the prediction
    (or of tricubic interpolation when None)."""
    from revmed import metrics
    from revmed.io import read_volume
    from revmed.transforms import upsample

    ref = read_volume(case / "ref.nii.gz").array
    mask = read_volume(case / "mask.nii.gz").array[0] > 0
    if prediction is None:
        array = upsample(read_volume(case / "low.nii.gz").array, FACTORS, "bspline",
                         shape=ref.shape[1:])
    else:
        array = read_volume(prediction).array
    box = (slice(None), *(slice(int(w.min()), int(w.max()) + 1) for w in np.nonzero(mask)))
    rmse = metrics.rmse(array[0], ref[0], mask)
    return {"psnr": 20 * math.log10(SCALE / rmse),
            "ssim": metrics.ssim3d(array[box], ref[box], SCALE, low=0.0)}


def run_one(config: str, seed: int, data: Path, args) -> dict:
    """Train (unless shared) and infer one configuration and seed; cached in ``--work``."""
    result_path = args.work / "results" / f"{config}-{seed}.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    trained = SHARED_TRAINING.get(config, config)
    run = args.work / "runs" / f"{trained}-{seed}"
    if trained == config:
        command, env = train_command(config, data, run, seed, args)
        start = time.monotonic()
        subprocess.run(command, check=True, env=env)
        train_seconds = time.monotonic() - start
    else:
        train_seconds = json.loads((args.work / "results" / f"{trained}-{seed}.json")
                                   .read_text())["train_seconds"]
    result = {"config": config, "seed": seed, "train_seconds": train_seconds,
              "epochs": epochs_run(run), "cases": {}}
    for name in VOLUMES:
        case = args.work / "test" / name
        out = args.work / "outputs" / f"{config}-{seed}-{name}.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        seconds = infer(config, run, case / "low.nii.gz", out, args)
        result["cases"][name] = {**score(out, case), "infer_seconds": seconds}
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=1))
    print(f"{config} seed {seed}: {train_seconds:.0f} s, {result['epochs']} epochs, "
          + ", ".join(f"{n} {c['psnr']:.3f} dB / {c['ssim']:.4f}"
                      for n, c in result["cases"].items()), flush=True)
    return result


def tables(results: list[dict], baseline: dict[str, dict], seeds: list[int]) -> str:
    """Per configuration: PSNR and SSIM over tricubic, per volume (mean over seeds) and their
    mean; the paired difference from ``today`` per seed."""
    by = {(r["config"], r["seed"]): r for r in results}
    configs = [c for c in CONFIGS if any(k[0] == c for k in by)]
    head = ("| configuration | epochs | " + " | ".join(
        f"{n}: PSNR − tricubic | {n}: SSIM" for n in VOLUMES)
        + " | mean PSNR − tricubic | vs today, per seed |")
    lines = ["tricubic: " + ", ".join(f"{n} {b['psnr']:.3f} dB, SSIM {b['ssim']:.4f}"
                                      for n, b in baseline.items()), "", head,
             "|" + "---|" * (4 + 2 * len(VOLUMES))]

    def gain(r: dict) -> float:
        return statistics.mean(r["cases"][n]["psnr"] - baseline[n]["psnr"] for n in VOLUMES)

    for config in configs:
        runs = [by[(config, s)] for s in seeds if (config, s) in by]
        cells = []
        for n in VOLUMES:
            d = [r["cases"][n]["psnr"] - baseline[n]["psnr"] for r in runs]
            cells.append(f"{statistics.mean(d):+.2f} ({', '.join(f'{v:+.2f}' for v in d)})")
            cells.append(f"{statistics.mean(r['cases'][n]['ssim'] for r in runs):.4f}")
        diffs = [gain(by[(config, s)]) - gain(by[("today", s)]) for s in seeds
                 if (config, s) in by and ("today", s) in by]
        epochs = "/".join(str(r["epochs"]) for r in runs)
        lines.append(f"| {config} | {epochs} | " + " | ".join(cells)
                     + f" | {statistics.mean(gain(r) for r in runs):+.2f} | "
                     + (", ".join(f"{d:+.2f}" for d in diffs) if config != "today" else "–")
                     + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--train-without-statistics":
        train_without_statistics(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--time-limit", type=float, default=270.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/trained-sr"))
    parser.add_argument("--volume-rendering-data", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None,
                        help="also write every run's results here (default: "
                        "benchmarks/results/trained_sr.json)")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout of an older revmed, for the 'before' configuration")
    args = parser.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        sys.exit(f"unknown configurations {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    if "before" in configs and args.before is None:
        sys.exit("configuration 'before' needs --before PATH (a checkout of an older revmed)")
    seeds = [int(s) for s in args.seeds.split(",")]
    data = prepare(args.work, args.volume_rendering_data)
    baseline = {n: score(None, args.work / "test" / n) for n in VOLUMES}
    results = []
    for seed in seeds:  # every configuration of a seed before the next seed: a stopped run
        for config in configs:  # still compares like with like
            if config in SHARED_TRAINING and SHARED_TRAINING[config] not in configs:
                continue
            results.append(run_one(config, seed, data, args))
    print(tables(results, baseline, seeds))
    out = args.json or Path(__file__).resolve().parent / "results" / "trained_sr.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"tricubic": baseline, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
