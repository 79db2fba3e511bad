"""The demo: chest-CT super-resolution from synthetic data to an evaluated result.

``run_demo(out_dir)`` does what a user would do by hand, in one folder:

1. ``data/``: a small synthetic chest-CT set (``revmed synth chestct-sr``);
2. ``run/``: the ``demo-sr`` preset trained on it, within a time limit;
3. ``low_res/``: the held-out test volumes degraded by the preset's factors (block means on the
   coarse grid: what a thicker-slice scan of the same patient would hold);
4. ``sr/``: those low-resolution volumes super-resolved by the trained model;
5. the evaluation of ``sr/`` against the original volumes inside the body mask, with
   trilinear and tricubic (cubic B-spline) upsampling of ``low_res/`` beside it, in
   ``evaluation.json``, with a PNG preview of orthogonal slices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from revmed import config
from revmed.data.synthetic import synthesize
from revmed.engine.setup import setup_training
from revmed.engine.trainer import TrainEvent
from revmed.evaluation import Report, evaluate, write_outputs
from revmed.inference import Translator
from revmed.io import read_volume, write_volume, zoom_affine
from revmed.transforms import downsample

DEMO_PRESET = "demo-sr"
DEMO_CASES = 6
DEMO_SHAPE = (64, 64, 48)


@dataclass
class DemoResult:
    report: Report
    checkpoint: Path
    previews: list[Path]
    training: dict[str, Any]


def run_demo(out_dir: str | Path, time_limit: float | None = None, device: str = "cpu",
             overrides: list[str] | None = None, cases: int = DEMO_CASES,
             shape: tuple[int, int, int] = DEMO_SHAPE,
             on_stage: Callable[[str], None] | None = None,
             on_train: Callable[[TrainEvent], None] | None = None) -> DemoResult:
    """Run the whole demo into ``out_dir`` (which must not hold a previous demo)."""
    out_dir = Path(out_dir)
    say = on_stage or (lambda text: None)
    preset = config.load_preset(DEMO_PRESET, overrides or [])
    if time_limit is not None:
        preset = replace(preset, train=replace(preset.train, time_limit=float(time_limit)))
    say(f"synthesising {cases} chest-CT phantoms into {out_dir / 'data'}")
    dataset = synthesize("chestct-sr", out_dir / "data", cases=cases,
                         seed=preset.train.seed, shape=shape)
    say(f"training {DEMO_PRESET} for at most {preset.train.time_limit:.0f} s "
        f"into {out_dir / 'run'}")
    trainer = setup_training(preset, out_dir / "data", out_dir / "run", torch.device(device))
    training = trainer.fit(progress=on_train)
    stopped = (f", then stopped at the {preset.train.time_limit:.0f} s time limit"
               if training.get("stopped_at_time_limit") else "")
    say(f"trained {training.get('epoch', 0)} of {preset.train.total_epochs} epoch(s){stopped}")
    checkpoint = out_dir / "run" / "best.pt"
    factors = preset.data.sr_factors
    translator = Translator.load(checkpoint, device)
    for folder in ("low_res", "sr"):
        (out_dir / folder).mkdir(exist_ok=True)
    say("degrading the held-out test volumes and super-resolving them")
    for case in dataset.splits["test"]:
        high = read_volume(case.target)
        low = high.with_array(downsample(high.array, factors),
                              zoom_affine(high.affine, [1.0 / f for f in factors]))
        low_path = write_volume(low, out_dir / "low_res" / f"{case.name}.nii.gz")
        sr = translator.translate(read_volume(low_path))
        write_volume(sr, out_dir / "sr" / f"{case.name}.nii.gz")
    say("evaluating against trilinear and tricubic upsampling")
    test_dir = out_dir / "data" / "test"
    window = preset.data.window
    report = evaluate(out_dir / "sr", test_dir / "Y", mask=test_dir / "masks",
                      input=out_dir / "low_res", baselines=("trilinear", "tricubic"),
                      data_range=window[1] - window[0], preview=True)
    png = out_dir / ("preview" if len(report.cases) > 1 else "preview.png")
    written = write_outputs(report, json_path=out_dir / "evaluation.json", png=png)
    previews = [p for p in written if p.suffix == ".png"]
    return DemoResult(report, checkpoint, previews, training)
