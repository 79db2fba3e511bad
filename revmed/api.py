"""The Python API for scripts, in one place: presets, training, prediction, evaluation, and
the demo that runs them all.

This module gathers what a script needs so that it reads like the command line (docs/api.md has
a tested example); everything but the two calls defined here (``predict_file``, what ``revmed
infer`` does for one file, and ``run_demo``, ``revmed demo``) is also importable from the
module that defines it::

    from revmed.api import load_predictor, predict_file, evaluate

    predictor = load_predictor("runs/demo/best.pt")
    predict_file(predictor, "scan_lr.nii.gz", "scan_sr.nii.gz")
    report = evaluate("scan_sr.nii.gz", "scan_hr.nii.gz", data_range=1500)

Errors a caller can cause are ``revmed.errors.RevmedError``s naming the file and the problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from revmed.config import load_preset
from revmed.data.synthetic import synthesize
from revmed.engine.setup import setup_training
from revmed.engine.signals import TrainingInterrupted
from revmed.engine.trainer import Trainer, TrainEvent
from revmed.errors import OutputError, RevmedError
from revmed.evaluation import Report, evaluate, evaluate_regions, write_outputs
from revmed.inference import Predictor, Segmenter, Translator, load_predictor
from revmed.inference.files import infer_files
from revmed.io import Volume, read_channels, read_volume, write_volume, zoom_affine
from revmed.runtime import resolve_device
from revmed.selfsr import SelfSRResult, selfsr
from revmed.selfsr.files import selfsr_files
from revmed.transforms import downsample

__all__ = ["DemoResult", "Predictor", "Report", "RevmedError", "Segmenter", "Trainer",
           "TrainingInterrupted", "Translator", "Volume", "evaluate", "evaluate_regions",
           "infer_files", "load_predictor", "load_preset", "predict_file", "read_channels",
           "read_volume", "resolve_device", "run_demo", "SelfSRResult", "selfsr", "selfsr_files",
           "setup_training", "write_outputs", "write_volume"]


def predict_file(predictor: Predictor | str | os.PathLike, source: str | os.PathLike,
                 target: str | os.PathLike, *, reverse: bool = False,
                 overwrite: bool = False) -> Path:
    """Read ``source`` (a volume file or a DICOM series folder), predict it with
    ``predictor`` (a ``Predictor``, or a checkpoint path) and write ``target`` atomically
    (NIfTI, NRRD or MHA by its suffix; label maps as uint8). Returns ``target``.

    ``reverse`` runs a RevGAN's G instead of F. An existing ``target`` is an ``OutputError``
    unless ``overwrite``.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: exists", fix="overwrite")
    if not isinstance(predictor, Predictor):
        predictor = load_predictor(predictor)
    result = predictor.predict(read_volume(source), reverse=reverse)
    return write_volume(result, target, dtype=predictor.output_dtype)


# --- the demo -------------------------------------------------------------------------------------

DEMO_PRESET = "demo-sr"
DEMO_CASES = 6
DEMO_SHAPE = (64, 64, 48)


@dataclass
class DemoResult:
    """What ``run_demo`` made: the evaluation, the trained checkpoint, the preview PNGs and the
    training's last record."""

    report: Report
    checkpoint: Path
    previews: list[Path]
    training: dict[str, Any]


def run_demo(out_dir: str | Path, time_limit: float | None = None, device: str = "cpu",
             overrides: list[str] | None = None, cases: int = DEMO_CASES,
             shape: tuple[int, int, int] = DEMO_SHAPE,
             on_stage: Callable[[str], None] | None = None,
             on_train: Callable[[TrainEvent], None] | None = None) -> DemoResult:
    """Run the whole demo into ``out_dir`` (which must not hold a previous demo): what a user
    would do by hand, in one folder (``revmed demo``):

    1. ``data/``: a small synthetic chest-CT set (``revmed synth chestct-sr``);
    2. ``run/``: the ``demo-sr`` preset trained on it, within ``time_limit`` seconds;
    3. ``low_res/``: the held-out test volumes degraded by the preset's factors (block means on
       the coarse grid: what a thicker-slice scan of the same patient would hold);
    4. ``sr/``: those low-resolution volumes super-resolved by the trained model;
    5. the evaluation of ``sr/`` against the original volumes inside the body mask, with
       trilinear and tricubic (cubic B-spline) upsampling of ``low_res/`` beside it, in
       ``evaluation.json``, with a PNG preview of orthogonal slices.

    ``on_stage(text)`` hears of each stage, ``on_train(event)`` of each training step.
    """
    out_dir = Path(out_dir)
    say = on_stage or (lambda text: None)
    preset = load_preset(DEMO_PRESET, overrides or [])
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
