"""Writing an evaluation's report: JSON, CSV and one PNG preview per case, all atomically.

``check_outputs`` refuses paths that could not be written before any case is computed;
``write_outputs`` writes once every case has been, so a bad case leaves no partial output.
The file formats are in docs/evaluation.md.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from revmed.atomic import atomic_path, check_output_file, check_output_folder
from revmed.errors import OutputError
from revmed.evaluation.preview import write_png
from revmed.evaluation.scoring import Report


def preview_paths(report_cases: Sequence[str], png: Path, folder: bool) -> dict[str, Path]:
    """Case name -> PNG path: ``png`` itself for one case given as a file, else
    ``png/<case>.png``."""
    if not folder:
        return {report_cases[0]: png}
    return {name: png / f"{name}.png" for name in report_cases}


def png_is_folder(png: Path, several_cases: bool) -> bool:
    """Whether ``png`` names a folder: always for several cases, or an existing folder."""
    return several_cases or png.is_dir()


def check_outputs(json_path: Path | None = None, csv_path: Path | None = None,
                  png: Path | None = None, several_cases: bool = False) -> None:
    """Raise ``OutputError`` now for output paths that could not be written later.

    ``json_path`` and ``csv_path`` must be files in existing, writable folders; ``png`` is a
    file, or, for several cases, a folder (existing, or to be created in an existing folder).
    """
    for path, option in ((json_path, "json"), (csv_path, "csv")):
        if path is not None:
            check_output_file(path, option)
    if png is None:
        return
    if not png_is_folder(png, several_cases):
        check_output_file(png, "png")
        return
    if png.exists() and not png.is_dir():
        raise OutputError(f"{png}: must be a folder when evaluating folders (one PNG per case), "
                          "but it is a file", option="png")
    parent = png if png.is_dir() else (png.parent if str(png.parent) else Path("."))
    if not parent.is_dir():
        raise OutputError(f"{png}: output folder {parent} does not exist", option="png")
    check_output_folder(parent)


def _write_previews(report: Report, png: Path) -> list[Path]:
    folder = png_is_folder(png, len(report.cases) > 1)
    if folder:
        png.mkdir(exist_ok=True)
    paths = preview_paths([c.name for c in report.cases], png, folder)
    for case in report.cases:
        if case.preview is None:
            raise ValueError("write_outputs(png=...) needs evaluate(preview=True)")
        case.preview_path = write_png(case.preview, paths[case.name])
    return [case.preview_path for case in report.cases]


def write_outputs(report: Report, *, json_path: Path | None = None,
                  csv_path: Path | None = None, png: Path | None = None) -> list[Path]:
    """Write the PNG previews, the CSV and the JSON report atomically; returns the paths.

    PNGs first, so the JSON can name them (``"preview"`` per case). With several cases ``png``
    is a folder (created if needed) holding ``<case>.png``.
    """
    check_outputs(json_path, csv_path, png, len(report.cases) > 1)
    written = _write_previews(report, png) if png is not None else []
    if csv_path is not None:
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["case", "method", "data_range",
                                                   *report.metric_names])
            writer.writeheader()
            writer.writerows(report.csv_rows())
        written.append(csv_path)
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        written.append(json_path)
    return written
