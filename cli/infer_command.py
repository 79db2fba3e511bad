"""`revmed infer`: apply a trained model to a volume, a DICOM series or tree, or a folder of
cases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from revmed.cli import output
from revmed.cli.root import app, check_dicom_geometry, dicom_geometry_option
from revmed.errors import InputError
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


@app.command("infer")
def infer(
    inputs: list[Path] = typer.Argument(
        ..., metavar="INPUT...", help="Volume file, DICOM series folder, folder of cases, or "
        "DICOM tree (every image series under it is a case); several files are the channels "
        "of one case (ordered by the model's channel names when the file names allow)."),
    output_path: Path = typer.Option(..., "--output", "-o", help="Output file (a folder when "
                                     "INPUT is a folder of cases, or with --format dicom)."),
    model: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--model", "-m", help=f"Checkpoint (default: ${MODEL_ENV}, else the newest "
        "runs/*/best.pt)."),
    reverse: bool = typer.Option(False, "--reverse", help="RevGAN: run G (Y -> X) instead of F."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N (or mps "
                               "where PyTorch has it)."),
    overlap: Optional[float] = typer.Option(  # noqa: UP007
        None, "--overlap", min=0.0, max=0.95, help="Sliding-window overlap (default: the "
        "checkpoint preset's; windows only)."),
    windows: bool = typer.Option(
        False, "--windows", help="RevGAN: run blended sliding windows with per-window "
        "normalisation even when the checkpoint allows tiles (as older checkpoints run)."),
    precision: Optional[str] = typer.Option(  # noqa: UP007
        None, "--precision", help="fp32, bf16 or fp16 autocast (default: the checkpoint "
        "preset's infer.precision)."),
    compile_: Optional[bool] = typer.Option(  # noqa: UP007
        None, "--compile/--no-compile", help="torch.compile the network's plain sub-networks "
        "(default: the checkpoint preset's infer.compile)."),
    channels_last: Optional[bool] = typer.Option(  # noqa: UP007
        None, "--channels-last/--no-channels-last", help="Weights, windows and tiles in "
        "channels-last-3d order (default: tiles on the CPU channels-last, the rest as the "
        "checkpoint preset's infer.channels_last)."),
    series: Optional[str] = typer.Option(  # noqa: UP007
        None, "--series", help="SeriesInstanceUID (UID:echo2 and the like for one volume of a "
        "split series): read only this volume of a DICOM folder or tree."),
    dicom_geometry: str = dicom_geometry_option(),
    fmt: Optional[str] = typer.Option(  # noqa: UP007
        None, "--format", help="Output format: nii.gz, nii, nrrd, mha or dicom (default: the "
        "output's suffix; nii.gz for a folder of cases). dicom writes a derived series, or a "
        "DICOM-SEG for segmentations, in a folder."),
    dtype: str = typer.Option("float32", "--dtype", help="Voxel type of image outputs: "
                              "float32, or input (the input's integer type, values rounded, "
                              "when they fit; else float32)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Leave existing outputs alone and do the rest (to finish "
        "an interrupted batch)."),
    num_parts: int = typer.Option(1, "--num-parts", min=1, help="Split a folder's cases into "
                                  "this many parts (for job arrays)."),
    part_id: int = typer.Option(0, "--part-id", min=0, help="Which part this job does: 0 to "
                                "--num-parts - 1 (every K-th case, in name order)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no notes."),
) -> None:
    """Apply a trained model: a RevGAN (F, or G with --reverse) or a segmentation network.

    RevGAN outputs are in the input's units (HU for CT); for super-resolution they have the
    finer spacing over the same physical extent and direction. Segmentation outputs are label
    maps on the input's grid. Each output is written atomically (a DICOM series as a whole
    folder). In a batch, a case that fails is reported and the others are still done; the
    command then exits 2. No output may land on an input.

    Example: revmed infer scan.nii.gz -o sr.nii.gz --model runs/demo/best.pt
    """
    from revmed.inference import load_predictor
    from revmed.inference.outputs import check_model_outputs
    from revmed.io.batch import check_batch_options, run_targets, select_targets, single_claim
    from revmed.io.targets import plan_targets
    from revmed.runtime import resolve_device

    check_precision(precision)
    check_batch_options(overwrite, skip_existing, num_parts, part_id)
    check_dicom_geometry(dicom_geometry)
    # outputs, formats and inputs are checked before the model is loaded or any work is done
    plan = plan_targets(inputs, output_path, fmt, series)
    note = output.notes(quiet)
    targets = select_targets(plan, num_parts, part_id, overwrite, skip_existing, note)
    with single_claim(plan, targets, overwrite, skip_existing):
        checkpoint = _pick_model(model)
        predictor = load_predictor(checkpoint, resolve_device(device), compile=compile_,
                                   channels_last=channels_last)
        check_model_outputs(predictor, plan.format, targets, reverse, dtype)
        note(f"model: {checkpoint}")
        if len(inputs) > 1:
            _note_channels(inputs, list(predictor.card.data.channels), quiet)
        options = {"reverse": reverse, "overlap": overlap, "precision": precision,
                   "tiling": "windows" if windows else "auto"}
        run_targets(targets, plan, output_path, overwrite, lambda target: _infer_one(
            predictor, target, plan.format, dtype, checkpoint, quiet, options, dicom_geometry),
            skip_existing, on_failure=output.report_failure, on_interrupt=output.error)


def check_precision(precision: Optional[str]) -> None:  # noqa: UP007
    """``InputError`` for a ``--precision`` that is none of ``PRECISIONS``."""
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")


def _note_channels(inputs: list[Path], channels: list[str], quiet: bool) -> None:
    """Say that several INPUT files are one case's channels, and in which order."""
    from revmed.io.channels import match_channel_files

    ordered = match_channel_files(inputs, channels)
    how = (f"ordered as the model's channels ({', '.join(channels)})" if ordered else
           "in the order given (their names do not match the model's channels"
           f"{': ' + ', '.join(channels) if channels else ''})")
    output.note(f"{len(inputs)} INPUT files are taken as the channels of one case, {how}; to "
                "run each file as a case of its own, put them in a folder and give the folder",
                quiet)


def _infer_one(predictor, target, fmt: str, dtype: str, checkpoint: Path, quiet: bool,
               options: dict, dicom_geometry: str = "resample") -> None:
    """Read one case, predict it with a progress bar and write its target atomically."""
    from revmed.inference.outputs import predict_case, write_prediction

    with output.progress(f"infer {target.name}", None, quiet) as update:
        volume, result = predict_case(predictor, target, options, dicom_geometry,
                                      progress=lambda done, total: update(done, total))
    write_prediction(predictor, result, volume, target.path, fmt, checkpoint.name, dtype,
                     note=output.notes(quiet))
    output.stdout().print(f"wrote {target.path}")
