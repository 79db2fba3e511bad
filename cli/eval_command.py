"""`revmed eval`: image-quality metrics of predictions against references.

The work is in ``revmed.evaluation`` (imported inside the command, so that `revmed --help`
answers at once); this module parses the options, shows progress and prints the table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from revmed.cli import output
from revmed.cli.root import app
from revmed.errors import ConfigError

#: Digits shown per metric in the table (the JSON and CSV keep full precision).
_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.4f}"}


def _number(name: str, value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    if name in _FORMATS:
        return _FORMATS[name].format(value)
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"


def _table(report) -> Table:
    """Rows per case and method, then mean and std rows per method."""
    names = report.metric_names
    if report.kind == "regions":
        caption = "BraTS regions: ET = 4, TC = 1 + 4, WT = 1 + 2 + 4; HD95 in mm"
    elif report.data_range is None:
        caption = "data range: the reference's max - min, per case (see --json)"
    else:
        caption = f"data range: {report.data_range:g} (--data-range)"
    table = Table(title="revmed eval", caption=caption, title_justify="left",
                  caption_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("case", no_wrap=True)
    table.add_column("method", no_wrap=True)
    for name in names:
        table.add_column(name.replace("_", "\n"), justify="right", no_wrap=True)
    for case in report.cases:
        for method in report.methods:
            table.add_row(escape(case.name), method,
                          *(_number(n, case.metrics[method][n]) for n in names))
    table.add_section()
    summary = report.summary()
    for stat in ("mean", "std"):
        label = f"mean of {len(report.cases)}" if stat == "mean" else "std"
        for method in report.methods:
            table.add_row(label, method,
                          *("-" if summary[method][n]["n"] == 0 else
                            _number(n, summary[method][n][stat]) for n in names),
                          style="bold" if stat == "mean" else None)
    return table


def _print_wide(console, table: Table) -> None:
    """Print ``table`` at its natural width, even where that is wider than the terminal."""
    width = Measurement.get(console, console.options.update_width(1000), table).maximum
    if width > console.width:
        console.width = width
    console.print(table)


@app.command("eval")
def eval_(
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
    json_: Optional[str] = typer.Option(  # noqa: UP007
        None, "--json", metavar="FILE", help="Write the report as JSON to FILE; '-' prints "
        "the JSON alone on stdout instead of the table."),
    csv_: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--csv", metavar="FILE", help="Write one row per case and method to FILE."),
    png: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--png", metavar="PATH", help="Write orthogonal slices (input, prediction, "
        "reference, |error|) as PNG: a file for one case, a folder (one PNG per case) for "
        "folders."),
    regions: Optional[str] = typer.Option(  # noqa: UP007
        None, "--regions", metavar="brats", help="Score label maps instead of images: Dice, "
        "sensitivity and HD95 (mm) of the BraTS regions ET, TC and WT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or notes."),
) -> None:
    """Score predicted volumes against references: MAE, RMSE, PSNR, SSIM (or, with
    --regions brats, Dice, sensitivity and HD95 of label maps).

    PREDICTION and REFERENCE are two volumes or two folders whose cases pair up by name
    (case_003.nii.gz with case_003.nrrd); a case on one side only is an error. Both must have
    the same shape and spacing. Values are compared in the files' units (HU for CT); PSNR and
    SSIM use --data-range. With --input and --baseline, interpolation baselines are scored
    beside the prediction. Definitions: docs/evaluation.md.

    Example: revmed eval pred/ data/demo-sr/test/Y --mask data/demo-sr/test/masks --data-range 1500
    """
    from revmed.evaluation import (
        check_outputs,
        evaluate,
        evaluate_regions,
        match_cases,
        write_outputs,
    )

    if regions not in (None, "brats"):
        raise ConfigError(f"--regions {regions}: the only region set is 'brats'")
    if regions and (mask or input_ or baseline or png or data_range is not None):
        raise ConfigError("--regions scores label maps: --mask, --input, --baseline, --png and "
                          "--data-range do not apply")
    for path, option in ((csv_, "--csv"), (png, "--png")):
        if path is not None and str(path) == "-":
            raise ConfigError(f"{option} -: only --json can print on stdout; give a file name")
    to_stdout = json_ == "-"
    json_path = None if json_ is None or to_stdout else Path(json_)
    several = len(match_cases(prediction, reference, mask=mask, input=input_)) > 1
    check_outputs(json_path, csv_, png, several)
    with output.progress("eval", None, quiet or to_stdout) as update:
        progress = lambda done, total, name: update(done, total, name)  # noqa: E731
        if regions:
            report = evaluate_regions(prediction, reference, progress=progress)
        else:
            report = evaluate(prediction, reference, mask=mask, input=input_,
                              baselines=baseline, data_range=data_range,
                              preview=png is not None, progress=progress)
    written = write_outputs(report, json_path=json_path, csv_path=csv_, png=png)
    if to_stdout:
        output.emit_json(report.to_json())
        for path in written:
            output.note(f"wrote {path}", quiet)
        return
    console = output.stdout()
    _print_wide(console, _table(report))
    for path in written:
        console.print(f"wrote {path}", markup=False)
