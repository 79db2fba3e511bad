"""`revmed infer`: apply a trained model to a volume, a DICOM series or a folder of cases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from revmed.cli import output
from revmed.cli.root import app
from revmed.errors import InputError, OutputError, RevmedError
from revmed.preset import PRECISIONS

MODEL_ENV = "REVMED_MODEL"


def _pick_model(model: Optional[Path]) -> Path:  # noqa: UP007
    from revmed.inference import newest_checkpoint

    if model is not None:
        return model
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    newest = newest_checkpoint()
    if newest is None:
        raise InputError(f"no model given: pass --model CKPT, set {MODEL_ENV}, or train one "
                         "(runs/*/best.pt is used by default)")
    return newest


def _cases(inputs: list[Path], output_path: Path, channels: list[str]):
    """``([(sources, target)], batch)``: what to read for each output file, and whether
    INPUT is a folder of cases (``revmed.io.find_cases``). Several INPUT files are the
    channels of one case; a folder of cases gives one output per case in the output folder."""
    from revmed.io import find_cases

    if len(inputs) > 1:
        return [(inputs, output_path)], False
    cases = find_cases(inputs[0], channels)
    if cases is None:
        return [(inputs, output_path)], False
    return [(files, output_path / f"{name}.nii.gz") for name, files in cases.items()], True


@app.command("infer")
def infer(
    inputs: list[Path] = typer.Argument(
        ..., metavar="INPUT...", help="Volume file, DICOM series folder, or folder of cases; "
        "several files are the channels of one case (in the model's channel order)."),
    output_path: Path = typer.Option(..., "--output", "-o",
                                     help="Output NIfTI file (a folder when INPUT is one)."),
    model: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--model", "-m", help=f"Checkpoint (default: ${MODEL_ENV}, else the newest "
        "runs/*/best.pt)."),
    reverse: bool = typer.Option(False, "--reverse", help="RevGAN: run G (Y -> X) instead of F."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    overlap: Optional[float] = typer.Option(  # noqa: UP007
        None, "--overlap", min=0.0, max=0.95, help="Sliding-window overlap (default: the "
        "checkpoint preset's)."),
    precision: Optional[str] = typer.Option(  # noqa: UP007
        None, "--precision", help="fp32, bf16 or fp16 autocast (default: the checkpoint "
        "preset's infer.precision)."),
    compile_: Optional[bool] = typer.Option(  # noqa: UP007
        None, "--compile/--no-compile", help="torch.compile the network's plain sub-networks "
        "(default: the checkpoint preset's infer.compile)."),
    channels_last: Optional[bool] = typer.Option(  # noqa: UP007
        None, "--channels-last/--no-channels-last", help="Weights and windows in "
        "channels-last-3d order (default: the checkpoint preset's infer.channels_last)."),
    series: Optional[str] = typer.Option(  # noqa: UP007
        None, "--series", help="SeriesInstanceUID, for a DICOM folder with several series."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Leave existing outputs alone and do the rest (to finish "
        "an interrupted batch)."),
    num_parts: int = typer.Option(1, "--num-parts", min=1, help="Split a folder's cases into "
                                  "this many parts (for job arrays)."),
    part_id: int = typer.Option(0, "--part-id", min=0, help="Which part this job does: 0 to "
                                "--num-parts - 1 (every K-th case, in name order)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Apply a trained model: a RevGAN (F, or G with --reverse) or a segmentation network.

    RevGAN outputs are in the input's units (HU for CT); for super-resolution they have the
    finer spacing over the same physical extent and direction. Segmentation outputs are BraTS
    label maps (0, 1, 2, 4) on the input's grid. Each output is written atomically. In a batch,
    a case that fails is reported and the others are still done; the command then exits 2.

    Example: revmed infer scan.nii.gz -o sr.nii.gz --model runs/demo/best.pt
    """
    from revmed.atomic import check_output_folder
    from revmed.runtime import resolve_device
    from revmed.inference import load_predictor

    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: choose one of "
                         f"{', '.join(PRECISIONS)}")
    if overwrite and skip_existing:
        raise InputError("--overwrite and --skip-existing contradict each other; give one")
    if part_id >= num_parts:
        raise InputError(f"--part-id {part_id}: must be below --num-parts {num_parts}")
    # an unwritable destination is reported before the model is loaded or any work is done
    check_output_folder(output_path if output_path.is_dir() else output_path.parent)
    checkpoint = _pick_model(model)
    predictor = load_predictor(checkpoint, resolve_device(device), compile=compile_,
                               channels_last=channels_last)
    cases, batch = _cases(inputs, output_path, list(predictor.card.data.channels))
    if batch and output_path.exists() and not output_path.is_dir():
        raise OutputError(f"{output_path}: INPUT is a folder of cases, so the output must be "
                          "a folder")
    if not batch and output_path.is_dir():
        raise OutputError(f"{output_path}: is a folder; give an output file name")
    if num_parts > 1:
        if not batch:
            raise InputError("--num-parts splits a folder of cases; INPUT is a single case")
        cases = cases[part_id::num_parts]
        output.note(f"part {part_id} of {num_parts}: {len(cases)} case(s)", quiet)
    existing = [target for _, target in cases if target.exists()]
    if skip_existing:
        cases = [(sources, target) for sources, target in cases if not target.exists()]
        if existing:
            output.note(f"skipping {len(existing)} existing output(s)", quiet)
    elif existing and not overwrite:
        raise OutputError(f"{existing[0]}: exists; use --overwrite to replace it or "
                          "--skip-existing to keep it")
    output.note(f"model: {checkpoint}")  # always said: which model made the output
    if batch:
        output_path.mkdir(parents=True, exist_ok=True)
    failures = []
    for sources, target in cases:
        try:
            _infer_one(predictor, sources, target, reverse, overlap, series, quiet, precision)
        except RevmedError as exc:
            if not batch:
                raise
            output.error(output.describe(exc))
            failures.append(sources[0])
    if failures:
        names = ", ".join(str(p) for p in failures[:5]) + (" ..." if len(failures) > 5 else "")
        raise InputError(f"{len(failures)} of {len(cases)} case(s) failed ({names}); the other "
                         f"{len(cases) - len(failures)} were written to {output_path}")


def _infer_one(predictor, sources: list[Path], target: Path, reverse: bool,
               overlap: Optional[float], series: Optional[str], quiet: bool,  # noqa: UP007
               precision: Optional[str]) -> None:  # noqa: UP007
    """Read one case, predict it and write ``target`` atomically."""
    from revmed.io import read_channels, read_volume, write_volume

    volume = (read_channels(sources) if len(sources) > 1
              else read_volume(sources[0], series=series))
    with output.progress(f"infer {sources[0].name}", None, quiet) as update:
        result = predictor.predict(volume, reverse=reverse, overlap=overlap,
                                   progress=lambda done, total: update(done, total),
                                   precision=precision)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_volume(result, target, dtype=predictor.output_dtype)
    output.stdout().print(f"wrote {target}")
