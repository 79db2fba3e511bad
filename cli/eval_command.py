"""`revmed eval`: image-quality metrics of predictions against references.

The work is in ``revmed.evaluation`` (imported inside the command, so that `revmed --help`
answers at once); this module parses the options, shows progress and prints the table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from revmed.cli import output
from revmed.cli.root import app
from revmed.errors import ConfigError

def _window(text: str) -> tuple[float, ...]:
    """``"-1150,350"`` -> ``(-1150.0, 350.0)``; the library checks the values."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--window {text}: expected two numbers, e.g. -1150,350") from None


def _typed(option: str) -> str | None:
    """The value of ``option`` as it was typed (``--png dir/`` keeps its slash, which the
    parsed path has lost), or None when it was not given."""
    typed = output.COMMAND_LINE
    for n, token in enumerate(typed):
        if token == option and n + 1 < len(typed):
            return typed[n + 1]
        if token.startswith(option + "="):
            return token[len(option) + 1:]
    return None


def _positional(prediction: Path, reference: Path, extra: list[str],
                json_: bool) -> tuple[Path, Path]:
    """PREDICTION and REFERENCE, after what scripts written for the old ``--json FILE`` of
    this command leave among them: ``--json -`` (its stdout form) still works, ``--json FILE``
    is refused with one line saying what changed (the file is now ``--json-out``)."""
    given = [str(prediction), str(reference), *extra]
    if json_ and "-" in given:
        given.remove("-")
    if len(given) == 2:
        return Path(given[0]), Path(given[1])
    if json_ and len(given) == 3:
        typed = output.COMMAND_LINE
        after = [typed[n + 1] for n, token in enumerate(typed[:-1]) if token == "--json"]
        named = [g for g in given if g.lower().endswith(".json")]
        file_ = (after[0] if after and after[0] in given else named[0] if len(named) == 1
                 else given[-1])
        raise ConfigError(f"--json {file_}: --json no longer takes a file name, it prints the "
                          f"report on stdout; to write a file use --json-out {file_}")
    raise ConfigError(f"expected PREDICTION and REFERENCE, got {len(given)} arguments: "
                      f"{' '.join(given)}")


@app.command("eval", context_settings={"allow_extra_args": True})
def eval_(
    ctx: typer.Context,
    prediction: Path = typer.Argument(..., help="Predicted volume, or a folder of them (cases "
                                      "matched by file name without the format suffix)."),
    reference: Path = typer.Argument(..., help="Reference volume, or a folder of them."),
    mask: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--mask", help="Mask volume (or folder, matched by case name): adds MAE and RMSE "
        "inside the mask and RMSE over its interior (voxels whose 5x5x5 neighbourhood lies in "
        "the mask)."),
    input_: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--input", help="Low-resolution input volume (or folder) for the baselines and "
        "the preview's first row."),
    baseline: list[str] = typer.Option(
        [], "--baseline", metavar="NAME", help="Also score the input upsampled to the "
        "reference grid: trilinear or tricubic (cubic B-spline). Repeatable; needs --input."),
    data_range: Optional[float] = typer.Option(  # noqa: UP007
        None, "--data-range", metavar="R", help="Value range for PSNR and SSIM, in the files' "
        "units (e.g. 1500 for CT in HU, the [-1150, 350] window). Default: each reference's "
        "max - min."),
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout "
                               "instead of the table (a flag, as on every command; the file "
                               "is --json-out)."),
    json_out: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--json-out", metavar="FILE", help="Write the report as JSON to FILE."),
    csv_: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--csv", metavar="FILE", help="Write one row per case and method to FILE."),
    png: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--png", metavar="PATH", help="Write orthogonal slices (input, prediction, "
        "reference, |error|) as PNG: a file for one case, a folder (one PNG per case) for "
        "folders."),
    regions: Optional[str] = typer.Option(  # noqa: UP007
        None, "--regions", metavar="brats|FILE", help="Score label maps instead of images: "
        "Dice, sensitivity and HD95 (mm) of each region: the BraTS regions ET, TC and WT, or "
        "those of a TOML file with [labels] and [regions] (e.g. the dataset's dataset.toml)."),
    window: Optional[str] = typer.Option(  # noqa: UP007
        None, "--window", metavar="LO,HI", help="Score the papers' way: reference, prediction "
        "and baselines clipped to this intensity window and mapped to [-1, 1] (data range 2), "
        "e.g. -1150,350 for the chest-CT presets; the report names the window."),
    error_scale: float = typer.Option(
        1.0, "--error-scale", metavar="F", help="Multiply MAE and RMSE by F to report them in "
        "other units than the files' (e.g. 100 for hcp-sr tensors in 1e-3 mm^2/s against the "
        "RevGAN paper's Table 3)."),
    resample: bool = typer.Option(
        False, "--resample", help="Resample predictions (and masks) on another grid onto the "
        "reference's (linear; nearest neighbour for label maps and masks) instead of refusing "
        "them."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --json-out, "
                                   "--csv and --png files (never the files evaluated)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or notes."),
) -> None:
    """Score predicted volumes against references: MAE, RMSE, PSNR, SSIM (or, with
    --regions brats, Dice, sensitivity and HD95 of label maps).

    PREDICTION and REFERENCE are two volumes or two folders whose cases pair up by name
    (case_003.nii.gz with case_003.nrrd); a case on one side only is an error. Volumes are
    compared in world space: one stored in another voxel order is reordered; one on another
    grid is refused (or resampled onto the reference with --resample). Values are compared in
    the files' units (HU for CT); PSNR and SSIM use --data-range. With --input and --baseline,
    interpolation baselines are scored beside the prediction. Definitions:
    docs/evaluation.md.

    Example: revmed eval pred/ data/test/Y --mask data/test/masks --data-range 1500
    """
    from revmed.evaluation import (
        check_outputs,
        evaluate,
        evaluate_regions,
        match_cases,
        write_outputs,
    )

    from revmed.regions import read_label_set

    labels = read_label_set(regions) if regions is not None else None
    bounds = _window(window) if window is not None else None
    if regions and (mask or input_ or baseline or png or data_range is not None or window
                    or error_scale != 1.0):
        raise ConfigError("--regions scores label maps: --mask, --input, --baseline, --png, "
                          "--data-range, --window and --error-scale do not apply")
    prediction, reference = _positional(prediction, reference, list(ctx.args), json_)
    for path, option in ((csv_, "--csv"), (png, "--png"), (json_out, "--json-out")):
        if path is not None and str(path) == "-":
            raise ConfigError(f"{option} -: use --json to print the report on stdout")
    to_stdout, json_path = json_, json_out
    for option in ("--json-out", "--csv"):
        typed = _typed(option)
        if typed is not None and typed.endswith(("/", os.sep)):
            raise ConfigError(f"{option} {typed}: names a folder; give a file name")
    cases = match_cases(prediction, reference, mask=mask, input=input_)
    typed_png = _typed("--png")  # PATH/ is a folder, as for several cases: PATH/<case>.png
    png_folder = bool(typed_png and typed_png.endswith(("/", os.sep)))
    check_outputs(json_path, csv_, png, len(cases) > 1 or png_folder, cases=cases,
                  overwrite=overwrite)
    with output.progress("eval", None, quiet or to_stdout) as update:
        progress = lambda done, total, name: update(done, total, name)  # noqa: E731
        if regions:
            report = evaluate_regions(prediction, reference, labels=labels, resample=resample,
                                      progress=progress)
        else:
            report = evaluate(prediction, reference, mask=mask, input=input_,
                              baselines=baseline, data_range=data_range,
                              preview=png is not None, resample=resample, window=bounds,
                              error_scale=error_scale, progress=progress)
    written = write_outputs(report, json_path=json_path, csv_path=csv_, png=png,
                            overwrite=overwrite, png_folder=png_folder)
    if to_stdout:
        output.emit_json(report.to_json())
        for path in written:
            output.note(f"wrote {path}", quiet)
        return
    console = output.stdout()
    output.print_wide(console, output.report_table(report))
    for path in written:
        console.print(f"wrote {path}", markup=False)
