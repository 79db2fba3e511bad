"""Scoring predictions against references, case by case: the metrics of ``revmed.metrics``
for the prediction and for interpolation baselines of the low-resolution input, or the Dice,
sensitivity and HD95 of each region of label maps.

Volumes are compared in world space (``revmed.io.grids``): a prediction stored in another
voxel order than its reference is reordered exactly; one on another grid (shifted, another
spacing) is refused with a line saying how the grids differ, or resampled onto the
reference's grid when asked (``resample=True``: linear for images, nearest neighbour for
masks and label maps).

``evaluate`` and ``evaluate_regions`` read each case, check that its volumes fit together and
return a ``Report``; nothing is written (``revmed.evaluation.reports`` writes it). The
definitions (data range, interior, baselines) are in docs/evaluation.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from revmed import metrics
from revmed.errors import ConfigError, InputError
from revmed.evaluation.cases import CaseFiles, match_cases
from revmed.evaluation.preview import case_preview
from revmed.io import Volume, check_finite, read_volume, zoom_affine
from revmed.io.grids import on_grid_of, reoriented_like
from revmed.regions import LabelSet
from revmed.transforms import coarse_shape, normalise, upsample
from revmed.sizes import require_memory, shape_text, voxel_bytes

#: Baseline name -> ``revmed.transforms.upsample`` mode ("tricubic" is the cubic B-spline).
BASELINES = {"trilinear": "trilinear", "tricubic": "bspline"}
#: Metrics of every case, over all voxels and channels.
METRICS = ("mae", "rmse", "psnr", "ssim")
#: Metrics added when a mask is given.
MASK_METRICS = ("mae_mask", "rmse_mask", "rmse_interior")
#: The metrics in the files' units, which ``error_scale`` multiplies.
ERROR_METRICS = ("mae", "rmse", "mae_mask", "rmse_mask", "rmse_interior")
#: Metrics of each region of a label map.
REGION_METRICS = ("dice", "sensitivity", "hd95")
#: How SSIM is computed (named in every report, as papers differ).
SSIM_VARIANT = ("3D, Gaussian window of 11 voxels (sigma 1.5) per axis, valid positions only, "
                "values shifted by the reference's minimum (monai.metrics.SSIMMetric)")
#: Side of the cube that must fit inside the mask around an interior voxel.
INTERIOR_SIZE = 5
#: How far (relative) a low-resolution spacing may be from an integer multiple of the
#: reference's.
FACTOR_TOLERANCE = 0.01

Progress = Callable[[int, int, str], None]


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
            are the regions of ``labels`` and the metrics Dice, sensitivity and HD95).
        labels: the label set of a ``"regions"`` report.
        window: the intensity window both volumes were mapped through to [-1, 1] before
            scoring (the papers' protocol), or None when they were scored in their units.
        error_scale: the factor MAE and RMSE were multiplied by (1: the files' units).
    """

    cases: list[CaseResult]
    methods: list[str]
    metric_names: list[str]
    data_range: float | None
    kind: str = "image"
    labels: LabelSet | None = None
    window: tuple[float, float] | None = None
    error_scale: float = 1.0

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
                   **({"window": list(self.window)} if self.window is not None else {}),
                   **({"error_scale": self.error_scale} if self.error_scale != 1.0 else {}),
                   **({"ssim": SSIM_VARIANT} if self.kind == "image" else {}),
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
# One case


def _shape_text(array: np.ndarray) -> str:
    c, *spatial = array.shape
    return shape_text(spatial) + (f" with {c} channels" if c > 1 else "")


def _spacing_text(spacing: np.ndarray) -> str:
    return "x".join(f"{v:g}" for v in np.round(spacing, 4)) + " mm"


def _read(path: Path) -> Volume:
    volume = read_volume(path)
    volume.source = volume.source or str(path)  # messages name the file
    check_finite(volume)
    return volume


def _on_reference(volume: Volume, ref: Volume, what: str, resample: str | None) -> Volume:
    """``volume`` (a ``what``) on the reference's grid (see the module doc); ``InputError``
    when the grids differ and ``resample`` is None, or when a prediction's channels differ."""
    if what == "prediction" and volume.channels != ref.channels:
        raise InputError(f"{volume.source}: {what} of shape {_shape_text(volume.array)} does "
                         f"not match the reference {ref.source} of shape "
                         f"{_shape_text(ref.array)}")
    return on_grid_of(volume, ref, what, resample)


def baseline_factors(low_res, ref) -> tuple[int, int, int]:
    """Integer refinement factors from a low-resolution input's grid to the reference's.

    ``low_res``, ``ref``: ``Volume``s, ``low_res`` with its axes along the reference's
    (``reoriented_like``). Each factor is the ratio of the spacings, which must be an integer
    >= 1 (within 1 %), and the input must cover the reference grid exactly as
    ``revmed.transforms.downsample`` makes it: shape ``ceil(reference shape / factors)``, over
    the same extent in space.
    """
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
    # where the input's first voxel lies on the coarsened reference grid, in coarse voxels:
    # conventions for the first voxel of a coarse grid differ by a fraction of a voxel, a grid
    # of another place by more
    coarse = zoom_affine(ref.affine, 1.0 / factors)
    offset = (np.linalg.inv(coarse) @ np.append(low_res.origin, 1.0))[:3]
    if np.abs(offset).max() > 0.5:
        shift = float(np.linalg.norm(low_res.origin - coarse[:3, 3]))
        raise InputError(f"{low_res.source}: the input does not cover the reference "
                         f"{ref.source} in space: its first voxel is {shift:.3g} mm from the "
                         f"reference's coarsened by {shape_text(factors)}")
    return tuple(int(f) for f in factors)  # type: ignore[return-value]


#: Bytes per voxel the metrics hold at once beyond the two volumes read (MONAI's float64
#: copies and differences, SSIM's filtered moments): measured peak 3.6 GB for two
#: 500 x 500 x 400 volumes (0.8 GB of them read), about 28 bytes a voxel more.
SCORING_BYTES_PER_VOXEL = 32


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


def _read_mask(path: Path, ref: Volume,
               resample: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The boolean mask ``(I, J, K)`` at ``path`` on ``ref``'s grid, and its interior."""
    volume = _on_reference(_read(path), ref, "mask", "nearest" if resample else None)
    if volume.channels != 1:
        raise InputError(f"{path}: a mask must have one channel, it has {volume.channels}")
    mask = volume.array[0] != 0
    if not mask.any():
        raise InputError(f"{path}: the mask is empty")
    return mask, metrics.interior(mask, INTERIOR_SIZE)


def _data_range(ref: Volume, data_range: float | None) -> tuple[float, float]:
    """``(low, span)``: the reference's minimum, and the data range of PSNR and SSIM."""
    low = float(ref.array.min())
    if data_range is not None:
        return low, float(data_range)
    span = float(ref.array.max()) - low
    if span <= 0:
        raise InputError(f"{ref.source}: the reference is constant ({low:g}), so it defines "
                         "no data range", fix="data_range")
    return low, span


def _read_input(path: Path, ref: Volume) -> tuple[Volume, tuple[int, int, int]]:
    """The low-resolution input at ``path`` with its axes along the reference's, and the
    factors that refine it to the reference's grid."""
    low_res = _read(path)
    aligned = reoriented_like(low_res, ref)
    if aligned is None:
        raise InputError(f"{path}: the input's axes are not the reference {ref.source}'s axes "
                         "(an oblique or rotated grid)")
    return aligned, baseline_factors(aligned, ref)


def _windowed(array: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """``array`` clipped to ``window`` and mapped to [-1, 1] (as it is without a window)."""
    return array if window is None else normalise(array, "window", window)


def evaluate_case(files: CaseFiles, baselines: Sequence[str] = (),
                  data_range: float | None = None, preview: bool = False,
                  resample: bool = False,
                  window: tuple[float, float] | None = None) -> CaseResult:
    """Read one case's files, check them and compute its metrics (see ``evaluate``)."""
    ref = _read(files.reference)
    pred = _on_reference(_read(files.prediction), ref, "prediction",
                         "linear" if resample else None)
    if window is not None:  # the papers' protocol: both mapped to [-1, 1] through the window
        ref, pred = ref.with_array(_windowed(ref.array, window)), pred.with_array(
            _windowed(pred.array, window))
        low, span = -1.0, 2.0
    else:
        low, span = _data_range(ref, data_range)
    mask, inner = (_read_mask(files.mask, ref, resample) if files.mask is not None
                   else (None, None))
    ssim_window_check(ref, files.reference)
    require_memory(str(files.prediction), voxel_bytes(ref.shape, ref.channels,
                                                      SCORING_BYTES_PER_VOXEL),
                   f"the scores of its {shape_text(ref.shape)} grid against the reference")
    results = {"prediction": _metrics(pred.array, ref.array, span, low, mask, inner)}
    low_res = factors = None
    if files.input is not None:
        low_res, factors = _read_input(files.input, ref)
        for name in baselines:
            base = _windowed(upsample(low_res.array, factors, BASELINES[name], shape=ref.shape),
                             window)
            results[name] = _metrics(base, ref.array, span, low, mask, inner)
    image = None
    if preview:
        shown = (None if low_res is None else
                 _windowed(upsample(low_res.array, factors, "nearest", shape=ref.shape), window))
        image = case_preview(pred.array, ref.array, shown, (low, low + span), mask, ref.spacing)
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
# All cases


def evaluate(prediction: str | os.PathLike, reference: str | os.PathLike, *,
             mask: str | os.PathLike | None = None,
             input: str | os.PathLike | None = None,  # noqa: A002
             baselines: Sequence[str] = (), data_range: float | None = None,
             preview: bool = False, resample: bool = False,
             window: tuple[float, float] | None = None, error_scale: float = 1.0,
             progress: Progress | None = None) -> Report:
    """Evaluate predictions against references, case by case.

    ``prediction``, ``reference``, ``mask``, ``input``: see ``match_cases``. ``baselines``:
    names from ``BASELINES``, computed by upsampling ``input`` onto the reference grid (needs
    ``input``). ``data_range``: the value range for PSNR and SSIM (e.g. 1500 for CT in HU);
    None uses each reference's max - min. ``preview``: keep a PNG mosaic per case.
    ``resample``: put predictions (linear) and masks (nearest) on another grid than the
    reference's onto it, instead of refusing them. ``window``: score the papers' way, both
    volumes clipped to this intensity window and mapped to [-1, 1] (data range 2; excludes
    ``data_range``). ``error_scale``: multiply MAE and RMSE (``ERROR_METRICS``) by this, to
    report them in other units than the files' (e.g. 100 for diffusion tensors stored in
    1e-3 mm^2/s against the RevGAN paper's Table 3). ``progress(done, total, case_name)`` is
    called after each case.

    Raises ``InputError`` (files that do not fit together, naming them) or ``ConfigError`` (bad
    options) before returning anything.
    """
    baselines = list(dict.fromkeys(baselines))
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"baseline {unknown[0]}: unknown baseline; choose from "
                          f"{', '.join(BASELINES)}", option="baseline")
    if baselines and input is None:
        raise ConfigError("baselines need the low-resolution input volumes to upsample",
                          option="input")
    if data_range is not None and (not math.isfinite(data_range) or data_range <= 0):
        raise ConfigError(f"data_range {data_range:g}: must be a positive number",
                          option="data_range")
    if window is not None:
        window = _check_window(window, data_range)
    if not math.isfinite(error_scale) or error_scale <= 0:
        raise ConfigError(f"error_scale {error_scale:g}: must be a positive number",
                          option="error_scale")
    cases = match_cases(prediction, reference, mask=mask, input=input)
    results = []
    for done, files in enumerate(cases, start=1):
        result = evaluate_case(files, baselines, data_range, preview, resample, window)
        for values in result.metrics.values():
            for name in ERROR_METRICS:
                if name in values:
                    values[name] *= error_scale
        results.append(result)
        if progress is not None:
            progress(done, len(cases), files.name)
    names = list(METRICS) + (list(MASK_METRICS) if mask is not None else [])
    return Report(cases=results, methods=["prediction", *baselines], metric_names=names,
                  data_range=2.0 if window is not None else
                  None if data_range is None else float(data_range), window=window,
                  error_scale=float(error_scale))


def _check_window(window: Sequence[float], data_range: float | None) -> tuple[float, float]:
    values = tuple(float(v) for v in window)
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] >= values[1]:
        raise ConfigError(f"window {window}: expected two increasing numbers, e.g. -1150,350",
                          option="window")
    if data_range is not None:
        raise ConfigError("window: maps both volumes to [-1, 1], whose data range is 2; give "
                          "no data_range with it", option="window")
    return values  # type: ignore[return-value]


def _region_scores(files: CaseFiles, labels: LabelSet, resample: bool) -> CaseResult:
    ref = _read(files.reference)
    pred = _on_reference(_read(files.prediction), ref, "prediction",
                         "nearest" if resample else None)
    masks = {}
    for role, volume in (("prediction", pred), ("reference", ref)):
        try:
            masks[role] = labels.masks(volume.array)
        except ValueError as exc:
            raise InputError(f"{volume.source}: the {role} {exc}") from None
    found, truth = masks["prediction"], masks["reference"]
    scores = {name: {"dice": metrics.dice(found[name], truth[name]),
                     "sensitivity": metrics.sensitivity(found[name], truth[name]),
                     "hd95": metrics.hd95(found[name], truth[name], ref.spacing)}
              for name in labels.names}
    return CaseResult(files=files, data_range=math.nan, low=math.nan, metrics=scores)


def evaluate_regions(prediction: str | os.PathLike, reference: str | os.PathLike, *,
                     labels: LabelSet, resample: bool = False,
                     progress: Progress | None = None) -> Report:
    """Evaluate predicted label maps against reference ones, region by region.

    Cases pair up as in ``match_cases``. Per case and region of ``labels`` (e.g.
    ``revmed.regions.BRATS``: ET, TC, WT; or a dataset's, ``read_label_set``): Dice,
    sensitivity and HD95 in mm (using the reference's
    spacing). Label maps holding values ``labels`` does not declare are refused.
    ``resample``: put predictions on another grid onto the reference's (nearest neighbour).
    The report's "methods" are the regions.
    """
    cases = match_cases(prediction, reference)
    results = []
    for done, files in enumerate(cases, start=1):
        results.append(_region_scores(files, labels, resample))
        if progress is not None:
            progress(done, len(cases), files.name)
    return Report(cases=results, methods=list(labels.names), metric_names=list(REGION_METRICS),
                  data_range=None, kind="regions", labels=labels)
