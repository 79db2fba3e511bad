"""Evaluating predicted volumes against references: the library behind ``revmed eval``.

``match_cases`` pairs prediction, reference, mask and low-resolution input files by case name;
``evaluate`` reads each case, checks that the volumes fit together, computes the metrics of
``revmed.metrics`` for the prediction and for interpolation baselines of the input, and keeps
the PNG previews in memory; ``write_outputs`` then writes the JSON, CSV and PNG files. Nothing is
written before every case has been computed, so a bad case leaves no partial output.

The definitions (data range, interior, baselines, file formats) are in docs/evaluation.md.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from revmed import metrics
from revmed.atomic import atomic_path
from revmed.data.layout import DICOM_SUFFIXES, case_name, volume_suffix
from revmed.errors import ConfigError, InputError, OutputError
from revmed.shapes import shape_text

#: Baseline name -> ``revmed.resample.upsample`` mode ("tricubic" is the cubic B-spline).
BASELINES = {"trilinear": "trilinear", "tricubic": "bspline"}
#: Metrics of every case, over all voxels and channels.
METRICS = ("mae", "rmse", "psnr", "ssim")
#: Metrics added when a mask is given.
MASK_METRICS = ("mae_mask", "rmse_mask", "rmse_interior")
#: Side of the cube that must fit inside the mask around an interior voxel.
INTERIOR_SIZE = 5
#: Spacings (mm) that differ by more than this are a mismatch.
SPACING_TOLERANCE = 1e-3
#: How far (relative) a low-resolution spacing may be from an integer multiple of the
#: reference's.
FACTOR_TOLERANCE = 0.01
#: |error| at this percentile is white in the previews.
ERROR_PERCENTILE = 99.0

Progress = Callable[[int, int, str], None]


@dataclass
class CaseFiles:
    """The files of one case: prediction and reference, optional mask and low-res input."""

    name: str
    prediction: Path
    reference: Path
    mask: Path | None = None
    input: Path | None = None

    def as_dict(self) -> dict[str, str]:
        files = {"prediction": self.prediction, "reference": self.reference,
                 "mask": self.mask, "input": self.input}
        return {k: str(v) for k, v in files.items() if v is not None}


@dataclass
class CaseResult:
    """The metrics of one case.

    Attributes:
        files: the case's files.
        data_range: the data range used for PSNR, SSIM and the preview window.
        low: the reference's minimum (SSIM's zero and the preview's black).
        metrics: method ("prediction", "trilinear", "tricubic") -> metric name -> value
            (``nan`` where undefined, e.g. the RMSE of an empty interior).
        mask_voxels: voxels in the mask (None without a mask).
        interior_voxels: voxels in the mask's interior (None without a mask).
        preview: the PNG mosaic (uint8 ``(H, W)``) when previews were asked for.
        preview_path: where ``write_outputs`` wrote the preview.
    """

    files: CaseFiles
    data_range: float
    low: float
    metrics: dict[str, dict[str, float]]
    mask_voxels: int | None = None
    interior_voxels: int | None = None
    preview: np.ndarray | None = field(default=None, repr=False)
    preview_path: Path | None = None

    @property
    def name(self) -> str:
        return self.files.name


@dataclass
class Report:
    """The result of ``evaluate``: one ``CaseResult`` per case, in case-name order.

    Attributes:
        cases: the cases.
        methods: "prediction" then the baselines, in the order asked for.
        metric_names: the metrics of every method (``METRICS``, plus ``MASK_METRICS`` with a
            mask).
        data_range: the ``data_range`` given, or None when each case used its reference's
            max - min.
        kind: ``"image"`` (``evaluate``), or ``"regions"`` (``evaluate_regions``: the methods
            are the BraTS regions and the metrics Dice, sensitivity and HD95).
    """

    cases: list[CaseResult]
    methods: list[str]
    metric_names: list[str]
    data_range: float | None
    kind: str = "image"

    def summary(self) -> dict[str, dict[str, dict[str, float | int]]]:
        """method -> metric -> {"mean", "std", "n"} over the cases where the metric is defined.

        ``std`` is the population standard deviation (``numpy.std``, ddof 0); ``n`` counts the
        cases that entered (a NaN, e.g. an empty interior, is left out; an infinite PSNR is
        kept and makes the mean infinite).
        """
        out: dict[str, dict[str, dict[str, float | int]]] = {}
        for method in self.methods:
            out[method] = {}
            for name in self.metric_names:
                values = np.array([c.metrics[method][name] for c in self.cases], dtype=float)
                values = values[~np.isnan(values)]
                if values.size == 0:
                    out[method][name] = {"mean": math.nan, "std": math.nan, "n": 0}
                    continue
                with np.errstate(invalid="ignore"):
                    mean, std = float(values.mean()), float(values.std())
                out[method][name] = {"mean": mean, "std": std, "n": int(values.size)}
        return out

    def to_json(self) -> dict:
        """The report as JSON-ready data (non-finite numbers become ``None``)."""
        cases = []
        for case in self.cases:
            row: dict = {"case": case.name, "files": case.files.as_dict(),
                         "data_range": case.data_range}
            if case.mask_voxels is not None:
                row["mask_voxels"] = case.mask_voxels
                row["interior_voxels"] = case.interior_voxels
            if case.preview_path is not None:
                row["preview"] = str(case.preview_path)
            for method in self.methods:
                row[method] = dict(case.metrics[method])
            cases.append(row)
        payload = {"kind": self.kind, "methods": list(self.methods),
                   "metrics": list(self.metric_names),
                   "data_range": self.data_range, "interior_size": INTERIOR_SIZE,
                   "cases": cases, "summary": self.summary()}
        return _finite(payload)

    def csv_rows(self) -> list[dict[str, object]]:
        """One row per case and method: case, method, data_range, then the metrics."""
        rows = []
        for case in self.cases:
            for method in self.methods:
                rows.append({"case": case.name, "method": method,
                             "data_range": case.data_range, **case.metrics[method]})
        return rows


def _finite(value):
    """``value`` with every non-finite float replaced by None (strict JSON has no inf/NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------
# Matching files to cases


def _case_folder(path: Path) -> dict[str, Path] | None:
    """Case name -> entry for a folder of cases; None for a single volume (file or DICOM folder).

    A folder holding volume files (``.nii.gz``, ``.nrrd``, ...) or sub-folders is a folder of
    cases: each volume file is a case, and so is each sub-folder (a DICOM series); other files
    (notes, PNGs, sidecars) are ignored. A folder of loose files only is one DICOM series.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not path.is_dir():
        return None
    try:
        entries = sorted(e for e in path.iterdir() if not e.name.startswith("."))
    except OSError as exc:
        raise InputError(f"{path}: cannot list folder ({exc})") from exc
    cases = [e for e in entries if e.is_dir() or volume_suffix(e) is not None]
    if not cases:
        if any(e.is_file() for e in entries):
            return None  # a DICOM series
        raise InputError(f"{path}: empty folder; expected volumes or a DICOM series")
    found: dict[str, Path] = {}
    for entry in cases:
        name = case_name(entry)
        if name in found:
            raise InputError(f"{entry}: case {name!r} appears twice (also {found[name]})")
        found[name] = entry
    return found


def _loose_dicom(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(DICOM_SUFFIXES)


def match_cases(prediction: str | os.PathLike, reference: str | os.PathLike,
                mask: str | os.PathLike | None = None,
                input: str | os.PathLike | None = None) -> list[CaseFiles]:  # noqa: A002
    """Pair the files of an evaluation by case name; returns the cases sorted by name.

    ``prediction`` and ``reference`` are two volumes (files or DICOM series folders) or two
    folders of cases. In folders, a case is a volume file named after the case plus its format
    suffix (``case_003.nii.gz`` pairs with ``case_003.nrrd``) or a DICOM sub-folder. Every
    prediction needs a reference and every reference a prediction: a case on one side only is
    an ``InputError`` listing all such cases. ``mask`` and ``input`` (low-resolution inputs for
    the baselines) follow the same form as the reference; with folders they must hold every
    case (extra files are ignored).
    """
    pred, ref = Path(prediction), Path(reference)
    pred_cases, ref_cases = _case_folder(pred), _case_folder(ref)
    extras = {"--mask": None if mask is None else Path(mask),
              "--input": None if input is None else Path(input)}
    if (pred_cases is None) != (ref_cases is None):
        file_, folder = (pred, ref) if pred_cases is None else (ref, pred)
        raise InputError(f"{file_} is one volume but {folder} is a folder of cases; give two "
                         f"volumes or two folders")
    if pred_cases is None:
        for option, path in extras.items():
            if path is not None and _case_folder(path) is not None:
                raise InputError(f"{path}: {option} is a folder of cases, but PREDICTION and "
                                 f"REFERENCE are single volumes; give one volume")
        return [CaseFiles(case_name(ref), pred, ref, extras["--mask"], extras["--input"])]
    assert ref_cases is not None
    problems = [f"{ref / name}: missing; no reference for the prediction {path}"
                for name, path in pred_cases.items() if name not in ref_cases]
    problems += [f"{pred / name}: missing; no prediction for the reference {path}"
                 for name, path in ref_cases.items() if name not in pred_cases]
    extra_cases: dict[str, dict[str, Path]] = {}
    for option, path in extras.items():
        if path is None:
            continue
        found = _case_folder(path)
        if found is None:
            raise InputError(f"{path}: {option} must be a folder of cases like {ref}, not a "
                             f"single volume")
        extra_cases[option] = found
        problems += [f"{path / name}: missing; {option} has no volume for case {name!r}"
                     for name in sorted(ref_cases) if name in pred_cases and name not in found]
    if problems:
        shown = problems[:10]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        raise InputError("; ".join(shown) + more)
    return [CaseFiles(name, pred_cases[name], ref_cases[name],
                      extra_cases.get("--mask", {}).get(name),
                      extra_cases.get("--input", {}).get(name))
            for name in sorted(ref_cases)]


# --------------------------------------------------------------------------------------------
# One case


def _shape_text(array: np.ndarray) -> str:
    c, *spatial = array.shape
    return shape_text(spatial) + (f" with {c} channels" if c > 1 else "")


def _spacing_text(spacing: np.ndarray) -> str:
    return "x".join(f"{v:g}" for v in np.round(spacing, 4)) + " mm"


def _read(path: Path):
    from revmed.io import check_finite, read_volume

    volume = read_volume(path)
    volume.source = volume.source or str(path)  # messages name the file
    check_finite(volume)
    return volume


def _same_grid(a, b, what: str) -> None:
    """Raise ``InputError`` unless volume ``a`` (a ``what``) is on the grid of reference ``b``."""
    if a.array.shape[1:] != b.array.shape[1:] or (what == "prediction"
                                                  and a.array.shape[0] != b.array.shape[0]):
        raise InputError(f"{a.source}: {what} of shape {_shape_text(a.array)} does not match "
                         f"the reference {b.source} of shape {_shape_text(b.array)}")
    if np.max(np.abs(a.spacing - b.spacing)) > SPACING_TOLERANCE:
        raise InputError(f"{a.source}: {what} spacing {_spacing_text(a.spacing)} does not match "
                         f"the reference {b.source} spacing {_spacing_text(b.spacing)}")


def baseline_factors(low_res, ref) -> tuple[int, int, int]:
    """Integer refinement factors from a low-resolution input's grid to the reference's.

    ``low_res``, ``ref``: ``Volume``s. Each factor is the ratio of the spacings, which must be
    an integer >= 1 (within 1 %), and the input must cover the reference grid exactly as
    ``revmed.resample.downsample`` makes it: shape ``ceil(reference shape / factors)``.
    """
    from revmed.resample import coarse_shape

    ratio = low_res.spacing / ref.spacing
    factors = np.round(ratio).astype(int)
    if np.any(factors < 1) or np.any(np.abs(ratio - factors) > FACTOR_TOLERANCE * factors):
        raise InputError(f"{low_res.source}: input spacing {_spacing_text(low_res.spacing)} is "
                         f"not an integer multiple of the reference {ref.source} spacing "
                         f"{_spacing_text(ref.spacing)}")
    expected = coarse_shape(ref.shape, factors)
    if tuple(low_res.shape) != expected:
        raise InputError(f"{low_res.source}: input shape {shape_text(low_res.shape)} "
                         f"refined by {shape_text(factors)} does not cover the reference "
                         f"{ref.source} of shape {shape_text(ref.shape)}; expected an "
                         f"input of shape {shape_text(expected)}")
    if low_res.channels != ref.channels:
        raise InputError(f"{low_res.source}: input has {low_res.channels} channels, the "
                         f"reference {ref.source} has {ref.channels}")
    return tuple(int(f) for f in factors)  # type: ignore[return-value]


def _metrics(pred: np.ndarray, ref: np.ndarray, data_range: float, low: float,
             mask: np.ndarray | None, inner: np.ndarray | None) -> dict[str, float]:
    values = {"mae": metrics.mae(pred, ref), "rmse": metrics.rmse(pred, ref),
              "psnr": metrics.psnr(pred, ref, data_range),
              "ssim": metrics.ssim3d(pred, ref, data_range, low=low)}
    if mask is not None:
        values["mae_mask"] = metrics.mae(pred, ref, mask)
        values["rmse_mask"] = metrics.rmse(pred, ref, mask)
        values["rmse_interior"] = (metrics.rmse(pred, ref, inner) if inner is not None
                                   and inner.any() else math.nan)
    return values


def _centre(shape: Sequence[int], mask: np.ndarray | None) -> tuple[int, int, int]:
    """The centre of the mask's bounding box, else of the volume."""
    if mask is not None and mask.any():
        where = np.argwhere(mask)
        return tuple(int(v) for v in (where.min(axis=0) + where.max(axis=0)) // 2)  # type: ignore
    return tuple(int(s) // 2 for s in shape)  # type: ignore[return-value]


def evaluate_case(files: CaseFiles, baselines: Sequence[str] = (),
                  data_range: float | None = None, preview: bool = False) -> CaseResult:
    """Read one case's files, check them and compute its metrics (see ``evaluate``)."""
    from revmed.preview import mosaic
    from revmed.resample import upsample

    pred = _read(files.prediction)
    ref = _read(files.reference)
    _same_grid(pred, ref, "prediction")
    low = float(ref.array.min())
    if data_range is None:
        span = float(ref.array.max()) - low
        if span <= 0:
            raise InputError(f"{files.reference}: the reference is constant ({low:g}), so it "
                             f"defines no data range; pass --data-range")
    else:
        span = float(data_range)
    mask = inner = None
    if files.mask is not None:
        mask_volume = _read(files.mask)
        _same_grid(mask_volume, ref, "mask")
        if mask_volume.channels != 1:
            raise InputError(f"{files.mask}: a mask must have one channel, it has "
                             f"{mask_volume.channels}")
        mask = mask_volume.array[0] != 0
        if not mask.any():
            raise InputError(f"{files.mask}: the mask is empty")
        inner = metrics.interior(mask, INTERIOR_SIZE)
    ssim_window_check(ref, files.reference)
    results = {"prediction": _metrics(pred.array, ref.array, span, low, mask, inner)}
    upsampled_input = None
    if files.input is not None:
        low_res = _read(files.input)
        factors = baseline_factors(low_res, ref)
        for name in baselines:
            base = upsample(low_res.array, factors, BASELINES[name], shape=ref.shape)
            results[name] = _metrics(base, ref.array, span, low, mask, inner)
        if preview:
            upsampled_input = upsample(low_res.array, factors, "nearest", shape=ref.shape)
    image = None
    if preview:
        error = np.abs(pred.array[0].astype(np.float64) - ref.array[0])
        top = float(np.percentile(error, ERROR_PERCENTILE)) or float(error.max()) or 1.0
        rows = [pred.array[0], ref.array[0], error]
        windows = [(low, low + span), (low, low + span), (0.0, top)]
        if upsampled_input is not None:
            rows.insert(0, upsampled_input[0])
            windows.insert(0, (low, low + span))
        image = mosaic(rows, windows, _centre(ref.shape, mask), ref.spacing)
    return CaseResult(files=files, data_range=span, low=low, metrics=results,
                      mask_voxels=None if mask is None else int(mask.sum()),
                      interior_voxels=None if inner is None else int(inner.sum()),
                      preview=image)


def ssim_window_check(ref, path: Path) -> None:
    """``InputError`` for a volume too small for SSIM (fewer than 3 voxels along an axis)."""
    try:
        metrics.ssim_window(ref.shape)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# All cases, and the outputs


def evaluate(prediction: str | os.PathLike, reference: str | os.PathLike, *,
             mask: str | os.PathLike | None = None,
             input: str | os.PathLike | None = None,  # noqa: A002
             baselines: Sequence[str] = (), data_range: float | None = None,
             preview: bool = False, progress: Progress | None = None) -> Report:
    """Evaluate predictions against references, case by case.

    ``prediction``, ``reference``, ``mask``, ``input``: see ``match_cases``. ``baselines``:
    names from ``BASELINES``, computed by upsampling ``input`` onto the reference grid (needs
    ``input``). ``data_range``: the value range for PSNR and SSIM (e.g. 1500 for CT in HU);
    None uses each reference's max - min. ``preview``: keep a PNG mosaic per case.
    ``progress(done, total, case_name)`` is called after each case.

    Raises ``InputError`` (files that do not fit together, naming them) or ``ConfigError`` (bad
    options) before returning anything.
    """
    baselines = list(dict.fromkeys(baselines))
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"--baseline {unknown[0]}: unknown baseline; choose from "
                          f"{', '.join(BASELINES)}")
    if baselines and input is None:
        raise ConfigError("--baseline needs --input: the low-resolution volumes to upsample")
    if data_range is not None and (not math.isfinite(data_range) or data_range <= 0):
        raise ConfigError(f"--data-range {data_range:g}: must be a positive number")
    cases = match_cases(prediction, reference, mask=mask, input=input)
    results = []
    for done, files in enumerate(cases, start=1):
        results.append(evaluate_case(files, baselines, data_range, preview))
        if progress is not None:
            progress(done, len(cases), files.name)
    names = list(METRICS) + (list(MASK_METRICS) if mask is not None else [])
    return Report(cases=results, methods=["prediction", *baselines], metric_names=names,
                  data_range=None if data_range is None else float(data_range))


REGION_METRICS = ("dice", "sensitivity", "hd95")


def evaluate_regions(prediction: str | os.PathLike, reference: str | os.PathLike, *,
                     progress: Progress | None = None) -> Report:
    """Evaluate predicted BraTS label maps against reference ones, region by region.

    Cases pair up as in ``match_cases``. Per case and region (ET, TC, WT; see
    ``revmed.segmentation``): Dice, sensitivity and HD95 in mm (using the reference's spacing).
    The report's "methods" are the regions.
    """
    from revmed.segmentation import REGIONS

    cases = match_cases(prediction, reference)
    results = []
    for done, files in enumerate(cases, start=1):
        pred, ref = _read(files.prediction), _read(files.reference)
        _same_grid(pred, ref, "prediction")
        try:
            found, truth = metrics.brats_regions(pred.array), metrics.brats_regions(ref.array)
        except ValueError as exc:
            raise InputError(f"{files.prediction} / {files.reference}: {exc}") from None
        scores = {name: {"dice": metrics.dice(found[name], truth[name]),
                         "sensitivity": metrics.sensitivity(found[name], truth[name]),
                         "hd95": metrics.hd95(found[name], truth[name], ref.spacing)}
                  for name in REGIONS}
        results.append(CaseResult(files=files, data_range=math.nan, low=math.nan,
                                  metrics=scores))
        if progress is not None:
            progress(done, len(cases), files.name)
    return Report(cases=results, methods=list(REGIONS), metric_names=list(REGION_METRICS),
                  data_range=None, kind="regions")


def _check_file_target(path: Path, option: str) -> None:
    if path.is_dir():
        raise OutputError(f"{path}: {option} names a folder; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{path}: output folder {folder} is not writable")


def preview_paths(report_cases: Sequence[str], png: Path, folder: bool) -> dict[str, Path]:
    """Case name -> PNG path: ``png`` itself for one case given as a file, else
    ``png/<case>.png``."""
    if not folder:
        return {report_cases[0]: png}
    return {name: png / f"{name}.png" for name in report_cases}


def png_is_folder(png: Path, several_cases: bool) -> bool:
    """Whether ``--png`` names a folder: always for several cases, or an existing folder."""
    return several_cases or png.is_dir()


def check_outputs(json_path: Path | None = None, csv_path: Path | None = None,
                  png: Path | None = None, several_cases: bool = False) -> None:
    """Raise ``OutputError`` now for output paths that could not be written later.

    ``json_path`` and ``csv_path`` must be files in existing, writable folders; ``png`` is a
    file, or, for several cases, a folder (existing, or to be created in an existing folder).
    """
    for path, option in ((json_path, "--json"), (csv_path, "--csv"), (png, "--png")):
        if path is not None and str(path) == "-":
            raise OutputError(f"{option} -: only --json can print on stdout; give a file name")
    for path, option in ((json_path, "--json"), (csv_path, "--csv")):
        if path is not None:
            _check_file_target(path, option)
    if png is None:
        return
    if png_is_folder(png, several_cases):
        if png.exists() and not png.is_dir():
            raise OutputError(f"{png}: --png must be a folder when evaluating folders (one PNG "
                              f"per case), but it is a file")
        parent = png if png.is_dir() else (png.parent if str(png.parent) else Path("."))
        if not parent.is_dir():
            raise OutputError(f"{png}: output folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise OutputError(f"{png}: output folder {parent} is not writable")
    else:
        _check_file_target(png, "--png")


def write_outputs(report: Report, *, json_path: Path | None = None,
                  csv_path: Path | None = None, png: Path | None = None) -> list[Path]:
    """Write the PNG previews, the CSV and the JSON report atomically; returns the paths.

    PNGs first, so the JSON can name them (``"preview"`` per case). With several cases ``png``
    is a folder (created if needed) holding ``<case>.png``.
    """
    from revmed.preview import write_png

    several = len(report.cases) > 1
    check_outputs(json_path, csv_path, png, several)
    written: list[Path] = []
    if png is not None:
        folder = png_is_folder(png, several)
        if folder:
            png.mkdir(exist_ok=True)
        paths = preview_paths([c.name for c in report.cases], png, folder)
        for case in report.cases:
            if case.preview is None:
                raise ValueError("write_outputs(png=...) needs evaluate(preview=True)")
            case.preview_path = write_png(case.preview, paths[case.name])
            written.append(case.preview_path)
    if csv_path is not None:
        rows = report.csv_rows()
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["case", "method", "data_range",
                                                   *report.metric_names])
            writer.writeheader()
            writer.writerows(rows)
        written.append(csv_path)
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        written.append(json_path)
    return written
