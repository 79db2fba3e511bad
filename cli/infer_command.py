"""`revmed infer`: apply a trained model to a volume, a DICOM series or tree, or a folder of
cases."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from revmed.cli import output
from revmed.cli.root import app, check_dicom_geometry, dicom_geometry_option

#: The variable that names the model when --model is not given (the library's
#: ``revmed.inference.loading.MODEL_ENV``, spelled here so that --help does not load torch).
MODEL_ENV = "REVMED_MODEL"


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
    from revmed.inference.files import infer_files
    from revmed.runtime import resolve_device

    check_dicom_geometry(dicom_geometry)
    infer_files(inputs, output_path, model, device=resolve_device(device), reverse=reverse,
                overlap=overlap, precision=precision, tiling="windows" if windows else "auto",
                compile=compile_, channels_last=channels_last, series=series,
                dicom_geometry=dicom_geometry, fmt=fmt, dtype=dtype, overwrite=overwrite,
                skip_existing=skip_existing, num_parts=num_parts, part_id=part_id,
                events=output.events(quiet))
