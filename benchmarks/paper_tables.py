"""The RevGAN papers' tables in their own layout, on data made here, with the presets named
after them.

* ``midl``: Table 2 of the MIDL 2019 chest-CT abstract. Rows Unpaired, Unpaired+2R, Paired,
  Paired+2R of the authors' strided generator (presets ``chestct-sr-strided`` and
  ``chestct-da-strided``; the unpaired rows set ``train.objective = "unpaired"``, which is
  ``chestct-da-unpaired-strided`` for kernel adaptation); columns MAE, PSNR and SSIM of
  super-resolution and of kernel adaptation, on reference and prediction clipped to the
  presets' [-1150, 350] HU window and mapped to [-1, 1] (the abstract's scale).
* ``cvpr``: Table 3 of the CVPR 2019 paper (HCP diffusion tensors, 2x isotropic). Depth 0, 2,
  4, 8 of the SRCNN RevGAN (preset ``hcp-sr``): paired without the GAN term, paired, unpaired;
  RMSE over the brain mask ("total") and over its interior (voxels whose 5x5x5 neighbourhood is
  all brain), in units of 1e-5 mm^2/s (the phantoms store 1e-3 mm^2/s), mean +- std over the
  held-out brains.

The data are revmed's synthetic phantoms (``revmed synth chestct-sr``, ``chestct-da``,
``hcp-sr``): the papers' data (the chest-CT study's scans, HCP) are not public here. Every row
trains for the same number of optimisation steps (``--steps``, rounded up to whole epochs; no
time limit) on patches of ``--patch`` voxels in batches of 4, one fresh process per row, two
rows at a time, one thread each; each is scored with its ``best.pt`` (best validation PSNR).
Low-resolution test inputs are block means of the held-out high-resolution volumes over the
preset's factors.

    python benchmarks/paper_tables.py --table midl --steps 200
    python benchmarks/paper_tables.py --table cvpr --steps 100
    python benchmarks/paper_tables.py --table midl --quick      # smoke test, a minute
    python benchmarks/paper_tables.py --table midl --steps 200 --set "model.layers='revmed'"
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import _common

WINDOW = (-1150.0, 350.0)
BATCH = 4
CHEST_SHAPE = (64, 64, 48)
HCP_SHAPE = (64, 64, 64)
#: diffusion phantoms are stored in 1e-3 mm^2/s; the paper's RMSE is in 1e-5 mm^2/s
HCP_ERROR_SCALE = 100.0


@dataclass(frozen=True)
class Row:
    label: str
    overrides: tuple[str, ...]
    cost: float = 1.0


UNPAIRED = ("train.objective='unpaired'", "train.lambda_cycle=10.0", "train.pool_size=50")
MIDL_ROWS = [
    Row("Unpaired", ("model.depth=0", *UNPAIRED), 1.6),
    Row("Unpaired+2R", ("model.depth=2", *UNPAIRED), 2.0),
    Row("Paired", ("model.depth=0",), 0.8),
    Row("Paired+2R", ("model.depth=2",), 1.0),
]
CVPR_ROWS = [
    *(Row(f"Paired{'+%dR' % d if d else ' (3D-SRCNN)'} w/o L_GAN",
          (f"model.depth={d}", "train.lambda_gan=0"), 0.3 + d) for d in (0, 2, 4, 8)),
    *(Row(f"Paired{'+%dR' % d if d else ' (3D-Pix2pix)'}", (f"model.depth={d}",), 0.4 + d)
      for d in (0, 2, 4, 8)),
    *(Row(f"Unpaired{'+%dR' % d if d else ' (3D-CycleGAN)'}", (f"model.depth={d}", *UNPAIRED),
          0.8 + 2 * d) for d in (0, 2, 4, 8)),
]
#: The published figures, to print beside ours: MIDL Table 2 (MAE, PSNR, SSIM of SR then DA)
#: and CVPR Table 3 (RMSE interior, RMSE total), means.
PAPER_MIDL = {"Unpaired": (0.24, 15.43, 0.44, 0.14, 14.56, 0.28),
              "Unpaired+2R": (0.23, 16.43, 0.50, 0.13, 17.44, 0.29),
              "Paired": (0.18, 15.89, 0.46, 0.14, 18.29, 0.33),
              "Paired+2R": (0.15, 18.19, 0.48, 0.10, 23.24, 0.46)}
PAPER_CVPR = [(7.03, 12.41), (7.02, 12.41), (6.68, 11.85), (18.43, 21.40),
              (11.94, 20.73), (9.61, 17.36), (8.43, 14.81), (7.82, 13.76),
              (17.23, 26.94), (11.05, 17.76), (18.98, 28.06), (18.96, 27.94)]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------------

def prepare(synth: str, preset: str, root: Path, cases: int, seed: int, shape) -> dict:
    """Synthesise a dataset; for SR also the block-mean low-resolution test inputs."""
    from revmed import config
    from revmed.data.synthetic import synthesize
    data = root / "data"
    dataset = synthesize(synth, data, cases=cases, seed=seed, shape=shape)
    test = dataset.splits["test"]
    info = {"data": str(data), "reference": str(data / "test" / "Y"),
            "mask": str(data / "test" / "masks"), "test_cases": [c.name for c in test],
            "splits": {k: len(v) for k, v in dataset.splits.items()}}
    if config.load_preset(preset).task != "sr":
        info["input"] = str(data / "test" / "X")
        return info
    _common.write_low_resolution(test, config.load_preset(preset).data.sr_factors,
                                 root / "low_res")
    info["input"] = str(root / "low_res")
    return info


def budget(steps: int, train_cases: int, epochs: int) -> tuple[list[str], int]:
    """Overrides for at least ``steps`` steps of ``BATCH`` random patches in ``epochs`` epochs,
    and the steps they make."""
    epochs = max(1, min(epochs, steps))
    per_volume = math.ceil(math.ceil(steps / epochs) * BATCH / train_cases)
    made = epochs * (train_cases * per_volume // BATCH)
    return (["train.time_limit=0", f"train.epochs={epochs}", "train.epochs_decay=0",
             f"train.batch_size={BATCH}", "patch.sampler='random'",
             f"patch.per_volume={per_volume}"], made)


# --- one row (a fresh process) ---------------------------------------------------------------

def worker(spec: dict) -> dict:
    import torch

    from revmed import config
    from revmed.evaluation import evaluate
    from revmed.inference import Translator
    from revmed.io import read_volume, write_volume

    torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    preset = config.load_preset(spec["preset"], spec["overrides"])
    _, params, cpu_s = _common.train_counted(preset, spec["data"], run_dir)
    epochs = [json.loads(line) for line in
              (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    translator = Translator.load(run_dir / "best.pt", "cpu")
    pred_dir = run_dir / "pred"
    pred_dir.mkdir(exist_ok=True)
    for name in spec["test_cases"]:
        volume = read_volume(Path(spec["input"]) / f"{name}.nii.gz")
        write_volume(translator.translate(volume), pred_dir / f"{name}.nii.gz")
    options = ({"window": WINDOW} if spec["scoring"] == "window" else
               {"mask": spec["mask"], "error_scale": HCP_ERROR_SCALE})
    summary = evaluate(pred_dir, spec["reference"], **options).to_json()["summary"]
    return {"params": params, "train_cpu_s": cpu_s, "steps": sum(r["steps"] for r in epochs),
            "layers": preset.model.layers, "encoder": preset.model.encoder,
            "summary": summary["prediction"]}


# --- the tables ------------------------------------------------------------------------------

def pm(summary: dict, metric: str, digits: int) -> str:
    s = summary.get(metric) or {}
    if s.get("mean") is None:
        return "–"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def midl_table(results: dict[str, dict[str, dict]]) -> str:
    header = ["", "SR MAE", "SR PSNR", "SR SSIM", "DA MAE", "DA PSNR", "DA SSIM"]
    body = []
    for row in MIDL_ROWS:
        cells = [row.label]
        for task in ("sr", "da"):
            r = results.get(task, {}).get(row.label)
            if r is None or "error" in r:
                cells += ["failed" if r else "–", "", ""]
                continue
            s = r["summary"]
            cells += [pm(s, "mae", 3), pm(s, "psnr", 2), pm(s, "ssim", 3)]
        body.append(cells)
    paper = [[f"paper: {k}", *(f"{v:.2f}" for v in vals)] for k, vals in PAPER_MIDL.items()]
    return _common.markdown_table(header, body) + "\n\n" + _common.markdown_table(header, paper)


def cvpr_table(results: dict[str, dict[str, dict]]) -> str:
    header = ["Model", "RMSE (Interior)", "RMSE (Total)", "paper: Interior", "paper: Total",
              "params", "train CPU s"]
    body = []
    for row, (interior, total) in zip(CVPR_ROWS, PAPER_CVPR, strict=True):
        r = results.get("sr", {}).get(row.label)
        if r is None or "error" in r:
            body.append([row.label, "failed" if r else "–", "", interior, total, "", ""])
            continue
        s = r["summary"]
        body.append([row.label, pm(s, "rmse_interior", 2), pm(s, "rmse_mask", 2), interior,
                     total, f"{r['params']:,}", f"{r['train_cpu_s']:.0f}"])
    return _common.markdown_table(header, body)


TABLES = {
    "midl": {"tasks": {"sr": ("chestct-sr", "chestct-sr-strided"),
                       "da": ("chestct-da", "chestct-da-strided")},
             "rows": MIDL_ROWS, "shape": CHEST_SHAPE, "scoring": "window", "patch": 32,
             "print": midl_table},
    "cvpr": {"tasks": {"sr": ("hcp-sr", "hcp-sr")}, "rows": CVPR_ROWS, "shape": HCP_SHAPE,
             "scoring": "mask", "patch": 24, "print": cvpr_table},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", choices=sorted(TABLES), help="which table (required)")
    parser.add_argument("--steps", type=int, default=200, help="optimisation steps per row")
    parser.add_argument("--epochs", type=int, default=4, help="epochs the steps are split into")
    parser.add_argument("--cases", type=int, default=30,
                        help="synthetic cases per task; a fifth are held out, one validates")
    parser.add_argument("--patch", type=int, default=None,
                        help="patch edge (default 32 for midl, 24 for cvpr: hcp-sr's)")
    parser.add_argument("--rows", default=None, help="comma-separated row labels (default all)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="preset override for every row, e.g. model.layers='revmed' to "
                             "measure revmed's own layers in the same set-up (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 steps, 10 cases, one epoch")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _common.answer_worker(args.worker, worker)
        return
    if args.table is None:
        parser.error("--table is required")
    if args.quick:
        args.steps, args.cases, args.epochs = 4, 10, 1
    table = TABLES[args.table]
    rows = table["rows"]
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",")]
        rows = [r for r in rows if r.label in wanted]
    patch = args.patch or table["patch"]
    started = time.monotonic()
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix=f"revmed-{args.table}-") as temp:
        jobs = []
        for task, (synth, preset) in table["tasks"].items():
            root = Path(temp) / task
            info = prepare(synth, preset, root, args.cases, args.seed, table["shape"])
            overrides, steps = budget(args.steps, info["splits"]["train"], args.epochs)
            log(f"{task}: {preset}, splits {info['splits']}, {steps} steps of {BATCH} "
                f"patches of {patch}^3 per row")
            (root / "specs").mkdir()
            for i, row in enumerate(rows):
                spec = {"preset": preset, "data": info["data"], "threads": 1,
                        "overrides": [*row.overrides, *overrides,
                                      f"patch.size=[{patch},{patch},{patch}]", *args.extra],
                        "run_dir": str(root / "runs" / str(i)), "input": info["input"],
                        "reference": info["reference"], "mask": info["mask"],
                        "test_cases": info["test_cases"], "scoring": table["scoring"]}
                jobs.append((task, row, spec, root / "specs" / f"{i}.json"))

        def train(job):
            task, row, spec, path = job
            log(f"{task}: training {row.label}")
            out = _common.run_json_worker(Path(__file__).resolve(), spec, path,
                                          {"OMP_NUM_THREADS": "1"})
            log(f"{task}: {row.label}: " + (f"FAILED {out['error']}" if "error" in out else
                                             f"{out['steps']} steps, "
                                             f"{out['train_cpu_s']:.0f} CPU s"))
            return task, row.label, out

        jobs.sort(key=lambda j: -j[1].cost)  # the slowest first, so the jobs end together
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for task, label, out in pool.map(train, jobs):
                results.setdefault(task, {})[label] = out
    total = time.monotonic() - started
    extra = f", with {' '.join(args.extra)}" if args.extra else ""
    print(f"\n{args.table}{extra}: {args.steps} steps per row (rounded up to whole epochs), "
          f"patches {patch}^3, batch {BATCH}, {args.cases} synthetic cases per task, "
          f"mean ± std over the held-out cases; {total / 60:.1f} min\n")
    print(table["print"](results))
    path = args.json or _common.RESULTS / f"paper_{args.table}.json"
    _common.write_json(path, {"benchmark": f"paper_{args.table}",
                              "command": " ".join(["python"] + sys.argv),
                              "machine": _common.machine("cpu"), "results": results,
                              "total_s": total})
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
