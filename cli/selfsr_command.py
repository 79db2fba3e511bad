"""`revmed selfsr`: super-resolve thick-slice scans from their own in-plane detail.

The work is ``revmed.selfsr.files.selfsr_files``, with ``revmed infer``'s batch rules (outputs
checked first, a failed scan reported and the others done, ``--skip-existing``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from revmed.cli import output
from revmed.cli.root import app, check_dicom_geometry, dicom_geometry_option

@app.command("selfsr")
def selfsr(
    input_path: Path = typer.Argument(..., metavar="SCAN", help="Thick-slice volume file, "
                                      "DICOM series folder, or folder of scans."),
    output_path: Path = typer.Option(..., "--output", "-o", help="Output file (a folder when "
                                     "SCAN is a folder of scans, or with --format dicom)."),
    factor: str = typer.Option("auto", "--factor", help="auto (through-plane spacing over "
                               "in-plane spacing) or a number such as 4 or 7.14."),
    axis: str = typer.Option("auto", "--axis", help="Through-plane voxel axis: auto (the "
                             "largest spacing), i, j or k."),
    slice_thickness: Optional[float] = typer.Option(  # noqa: UP007
        None, "--slice-thickness", help="Slice profile width in mm (default: the slice "
        "spacing; smaller models gaps between slices)."),
    slice_profile: str = typer.Option("box", "--slice-profile", help="box (contiguous "
                                      "slices, block mean) or gaussian."),
    steps: Optional[int] = typer.Option(  # noqa: UP007
        None, "--steps", min=1, help="Train exactly this many steps (a run that repeats "
        "exactly; default: as many as --time-limit allows)."),
    time_limit: Optional[float] = typer.Option(  # noqa: UP007
        None, "--time-limit", min=0.0, help="Training time per model in seconds, the budget "
        "the learning-rate schedule spreads over (default 240; with --steps, none unless "
        "given)."),
    orientations: int = typer.Option(2, "--orientations", min=1, max=2, help="2: average the "
                                     "network over both planes through the slices; 1: one "
                                     "(what revmed infer does with the kept model)."),
    preset: str = typer.Option("selfsr", "--preset", "-p", help="Network and training "
                               "settings: preset name or .toml path."),
    set_: list[str] = typer.Option([], "--set", help="Override a preset key: --set k=v."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the weights and patches."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    keep_model: bool = typer.Option(False, "--keep-model", help="Keep the trained model "
                                    "beside the output (NAME.selfsr.pt) for revmed infer."),
    shared: bool = typer.Option(False, "--shared", help="For a folder: one model trained on "
                                "every scan (one protocol) instead of one per scan."),
    series: Optional[str] = typer.Option(  # noqa: UP007
        None, "--series", help="SeriesInstanceUID (UID:echo2 and the like for one volume of a "
        "split series): read only this volume of a DICOM folder or tree."),
    dicom_geometry: str = dicom_geometry_option(),
    fmt: Optional[str] = typer.Option(  # noqa: UP007
        None, "--format", help="Output format: nii.gz, nii, nrrd, mha or dicom (default: the "
        "output's suffix; nii.gz for a folder)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave existing "
                                       "outputs alone and do the rest."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no notes."),
) -> None:
    """Super-resolve a thick-slice scan with no training data: a residual RevGAN learns from
    the scan's sharp in-plane axes and refines its through-plane axis.

    The output is the scan on the refined grid (same extent and direction, the through-plane
    spacing divided by the factor) in the scan's units; values outside the window the network
    was trained on pass through as interpolated. Training uses its time budget
    (--time-limit, 240 s): a faster machine trains more. With --steps the count is fixed, and
    with the same --seed a CPU run repeats exactly.

    Example: revmed selfsr thick.nii.gz -o iso.nii.gz --keep-model
    """
    from revmed.runtime import resolve_device
    from revmed.selfsr.files import selfsr_files

    check_dicom_geometry(dicom_geometry)
    selfsr_files(input_path, output_path, factor=factor, axis=axis, thickness=slice_thickness,
                 profile=slice_profile, steps=steps, time_limit=time_limit,
                 orientations=orientations, preset=preset, overrides=set_, seed=seed,
                 device=resolve_device(device), keep_model=keep_model, shared=shared,
                 series=series, dicom_geometry=dicom_geometry, fmt=fmt, overwrite=overwrite,
                 skip_existing=skip_existing, events=output.events(quiet))
