"""Writing an evaluation's report: JSON, CSV and one PNG preview per case, all atomically.

``check_outputs`` refuses paths that could not be written before any case is computed, and
paths that would destroy something: an existing file (unless ``overwrite``), a file of the
evaluation itself (a prediction, reference, mask or input: never, ``overwrite`` or not), or one
path given for two outputs. ``write_outputs`` checks again and writes once every case has been
computed, so a bad case leaves no partial output. The file formats are in docs/evaluation.md.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from revmed.io.atomic import atomic_path, check_output_file, check_output_folder
from revmed.errors import OutputError
from revmed.evaluation.preview import write_png
from revmed.evaluation.cases import CaseFiles
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


#: What each output is, for messages (by the argument that names it).
_WHAT = {"json_out": "the JSON report", "csv": "the CSV table", "png": "a PNG preview"}


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links too), whether or not it exists."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _check_not_an_input(path: Path, option: str, cases: Iterable[CaseFiles]) -> None:
    """``OutputError`` when ``path`` is one of the files the evaluation reads."""
    for case in cases:
        for role, source in case.as_dict().items():
            if _same_file(path, Path(source)):
                raise OutputError(f"{path}: is the {role} of case {case.name}; an output "
                                  "must not replace an input", option=option)


def _planned(json_path: Path | None, csv_path: Path | None, png: Path | None,
             several_cases: bool, names: Sequence[str]) -> list[tuple[Path, str]]:
    """``(file, option)`` of every file the report will write (one PNG per case in a
    folder)."""
    files = [(path, option) for path, option in ((json_path, "json_out"), (csv_path, "csv"))
             if path is not None]
    if png is not None:
        if png_is_folder(png, several_cases):
            files += [(path, "png") for path in preview_paths(names, png, True).values()]
        else:
            files.append((png, "png"))
    return files


def _check_png_folder(png: Path) -> None:
    if png.exists() and not png.is_dir():
        raise OutputError(f"{png}: must be a folder when evaluating folders (one PNG per case), "
                          "but it is a file", option="png")
    parent = png if png.is_dir() else (png.parent if str(png.parent) else Path("."))
    if not parent.is_dir():
        raise OutputError(f"{png}: output folder {parent} does not exist", option="png")
    check_output_folder(parent)


def check_outputs(json_path: Path | None = None, csv_path: Path | None = None,
                  png: Path | None = None, several_cases: bool = False, *,
                  cases: Sequence[CaseFiles] = (), overwrite: bool = False) -> None:
    """Raise ``OutputError`` now for output paths that could not, or must not, be written.

    ``json_path`` and ``csv_path`` must be files in existing, writable folders; ``png`` is a
    file, or, for several cases, a folder (existing, or to be created in an existing folder).
    No output may be one of the files of ``cases`` (the evaluation's inputs) or another
    output, and none may exist already unless ``overwrite``.
    """
    for path, option in ((json_path, "json_out"), (csv_path, "csv")):
        if path is not None:
            check_output_file(path, option)
    if png is not None:
        if png_is_folder(png, several_cases):
            _check_png_folder(png)
        else:
            check_output_file(png, "png")
    planned = _planned(json_path, csv_path, png, several_cases, [c.name for c in cases])
    for index, (path, option) in enumerate(planned):
        _check_not_an_input(path, option, cases)
        for other, other_option in planned[:index]:
            if _same_file(path, other):
                raise OutputError(f"{path}: named for both {_WHAT[other_option]} and "
                                  f"{_WHAT[option]}; give each its own file", option=option)
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: exists", option=option, fix="overwrite_file")


def _write_previews(report: Report, png: Path, png_folder: bool = False) -> list[Path]:
    folder = png_is_folder(png, len(report.cases) > 1 or png_folder)
    if folder:
        png.mkdir(exist_ok=True)
    paths = preview_paths([c.name for c in report.cases], png, folder)
    for case in report.cases:
        if case.preview is None:
            raise ValueError("write_outputs(png=...) needs evaluate(preview=True)")
        case.preview_path = write_png(case.preview, paths[case.name])
    return [case.preview_path for case in report.cases]


def write_outputs(report: Report, *, json_path: Path | None = None,
                  csv_path: Path | None = None, png: Path | None = None,
                  overwrite: bool = False, png_folder: bool = False) -> list[Path]:
    """Write the PNG previews, the CSV and the JSON report atomically; returns the paths.

    PNGs first, so the JSON can name them (``"preview"`` per case). With several cases, or
    ``png_folder``, ``png`` is a folder (created if needed) holding ``<case>.png``. The paths
    are checked again first (``check_outputs``: an existing file is replaced only with
    ``overwrite``).
    """
    check_outputs(json_path, csv_path, png, len(report.cases) > 1 or png_folder,
                  cases=[case.files for case in report.cases], overwrite=overwrite)
    written = _write_previews(report, png, png_folder) if png is not None else []
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
