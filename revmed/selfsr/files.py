"""``revmed selfsr`` as one call: scans in, each refined on a fine grid and written, with
``revmed infer``'s batch rules (``revmed.io.batch``: outputs checked first, a failed scan
reported and the others done, ``skip_existing``) and its writers
(``revmed.inference.outputs``).

``selfsr_files`` trains one model per scan, or with ``shared`` one model on every scan of a
folder that reads and plans (one protocol), then refines each scan with it. ``keep_model``
keeps each model beside its output (``NAME.selfsr.pt``; the shared one as ``SHARED_MODEL`` in
the output folder) for ``revmed infer``. What it says as it goes reaches ``events``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from revmed.checkpoint import save_checkpoint
from revmed.errors import ConfigError, InputError, OutputError, RevmedError
from revmed.inference.outputs import write_prediction
from revmed.io import Volume, read_volume
from revmed.io.atomic import check_output_file
from revmed.io.batch import Events, check_batch_options, run_targets, select_targets, single_claim
from revmed.io.targets import Plan, Target, plan_targets
from revmed.selfsr.plan import AXES, PROFILES, Refinement
from revmed.selfsr.refine import model_path_for, plan_for, refine, train_for, translator_for
from revmed.selfsr.training import TrainedModel, check_preset, training_budget

#: The name of the shared model in a batch's output folder (``shared`` and ``keep_model``).
SHARED_MODEL = "selfsr-shared.pt"


@dataclass(frozen=True)
class _Run:
    """What every scan of one ``selfsr_files`` call shares."""

    plan: Plan
    refinement: dict[str, Any]  # plan_for's options
    training: dict[str, Any]  # train_for's options
    models: dict[Path | None, Path]  # output -> kept model (None: the shared one)
    orientations: int
    dicom_geometry: str
    events: Events


def selfsr_files(scan: str | os.PathLike, output: str | os.PathLike, *,
                 factor: str | float = "auto", axis: str = "auto",
                 thickness: float | None = None, profile: str = "box",
                 steps: int | None = None, time_limit: float | None = None,
                 orientations: int = 2, preset: str = "selfsr",
                 overrides: Sequence[str] = (), seed: int = 0,
                 device: str | torch.device = "cpu", keep_model: bool = False,
                 shared: bool = False, series: str | None = None,
                 dicom_geometry: str = "resample", fmt: str | None = None,
                 overwrite: bool = False, skip_existing: bool = False,
                 events: Events = Events()) -> None:
    """Super-resolve ``scan`` (a volume, a DICOM series folder, or a folder of scans) into
    ``output`` (a file, or a folder for a batch or ``fmt="dicom"``); see the module doc and
    ``revmed.selfsr.selfsr`` for ``factor``, ``axis``, ``thickness``, ``profile``, ``steps``,
    ``time_limit``, ``orientations``, ``preset``, ``overrides`` and ``seed``. Everything that
    can be checked without reading a scan is checked first."""
    check_batch_options(overwrite, skip_existing)
    check_refinement_options(factor, axis, thickness, profile)
    training_budget(steps, time_limit)
    plan = plan_targets([scan], output, fmt, series)
    if shared and not plan.batch:
        raise InputError("--shared trains one model for a folder of scans; SCAN is one scan")
    targets = select_targets(plan, overwrite=overwrite, skip_existing=skip_existing,
                             note=events.note)
    check_preset(preset, overrides)
    run = _Run(plan, {"factor": factor, "axis": axis, "thickness": thickness,
                      "profile": profile},
               {"preset": preset, "overrides": list(overrides), "seed": seed, "steps": steps,
                "time_limit": time_limit, "device": torch.device(device)},
               kept_models(targets, Path(output), keep_model, shared, overwrite), orientations,
               dicom_geometry, events)
    with single_claim(plan, targets, overwrite, skip_existing):
        if shared:
            _run_shared(targets, run, Path(output))
        else:
            run_targets(targets, plan, Path(output), overwrite, lambda t: _one(t, run),
                        skip_existing, what="scan", events=events)


def check_refinement_options(factor: str | float, axis: str, thickness: float | None,
                             profile: str) -> None:
    """``ConfigError`` for refinement options that cannot be right, before any file is read."""
    if axis not in ("auto", *AXES):
        raise ConfigError(f"--axis {axis}: choose auto, i, j or k")
    if profile not in PROFILES:
        raise ConfigError(f"--slice-profile {profile}: choose {' or '.join(PROFILES)}")
    if factor != "auto":
        try:
            float(factor)
        except ValueError:
            raise ConfigError(f"--factor {factor}: give auto or a number such as 4 or "
                              "7.14") from None
    if thickness is not None and not thickness > 0:
        raise ConfigError(f"--slice-thickness {thickness:g}: must be a positive number of mm")


def kept_models(targets: Sequence[Target], output: Path, keep_model: bool, shared: bool,
                overwrite: bool) -> dict[Path | None, Path]:
    """Where each kept model goes (output path -> model path; ``None`` -> the shared one),
    checked before any work: an existing model is replaced only with ``overwrite``."""
    if not keep_model:
        return {}
    paths = ({None: output / SHARED_MODEL} if shared else
             {t.path: Path(model_path_for(t.path)) for t in targets})
    for path in paths.values():
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: exists (the model --keep-model would write); use "
                              "--overwrite to replace it")
        if not shared:
            check_output_file(path, option="keep_model")
    return paths


def _read(target: Target, dicom_geometry: str) -> Volume:
    case = target.case
    if case.problem:
        raise InputError(case.problem)
    if len(case.files) > 1:
        raise InputError(f"{case.files[0]}: a case of several channel files; selfsr refines "
                         "one-channel scans")
    return read_volume(case.files[0], case.series, dicom_geometry=dicom_geometry)


def _train(name: str, volumes: list[Volume], plans: list[Refinement], run: _Run) -> TrainedModel:
    """Train, with the loss and the time left as progress."""
    with run.events.progress(f"selfsr {name}", run.training["steps"]) as update:
        def report(step: int, steps: int, loss: float, left: float) -> None:
            update(step, steps, f"loss {loss:.4f} ETA {int(left) // 60}:{int(left) % 60:02d}")

        model = train_for(volumes, plans, progress=report, **run.training)
    how = (f"the time limit allowed {model.steps} (--steps {model.steps} fixes the count, for a "
           "run that repeats exactly)" if model.limited_by == "time" else "as asked")
    run.events.note(f"trained {model.steps} step(s) in {model.seconds:.0f} s, {how}; loss "
                    f"{model.loss:.4f}")
    return model


def _refine_write(model: TrainedModel, volume: Volume, plan: Refinement, target: Target,
                  model_path: Path | None, run: _Run) -> None:
    """Refine ``volume`` with ``model`` and write ``target`` atomically."""
    device = run.training["device"]
    translator = translator_for(model, device, str(model_path or "selfsr model"))
    with run.events.progress(f"refine {target.name}", None) as update:
        result = refine(translator, volume, plan, device,
                        progress=lambda done, total: update(done, total),
                        orientations=run.orientations)
    write_prediction(translator, result, volume, target.path, run.plan.format,
                     Path(model_path or "selfsr").name)
    run.events.wrote(target.path)


def _save(model: TrainedModel, path: Path | None, run: _Run) -> None:
    if path is not None:
        save_checkpoint(path, model.checkpoint)
        run.events.wrote(path)


def _one(target: Target, run: _Run) -> None:
    """One scan with a model of its own: read, plan, train, refine, write."""
    volume = _read(target, run.dicom_geometry)
    refinement = plan_for(volume, **run.refinement)
    run.events.note(f"{target.name}: {refinement.describe()}")
    model = _train(target.name, [volume], [refinement], run)
    _refine_write(model, volume, refinement, target, run.models.get(target.path), run)
    _save(model, run.models.get(target.path), run)


def _run_shared(targets: Sequence[Target], run: _Run, output: Path) -> None:
    """One model for every scan that reads and plans, then each scan refined with it (each
    output claimed as it is written, ``run_targets``)."""
    failures, ready = [], {}
    output.mkdir(parents=True, exist_ok=True)
    for target in targets:
        try:
            volume = _read(target, run.dicom_geometry)
            refinement = plan_for(volume, **run.refinement)
            run.events.note(f"{target.name}: {refinement.describe()}")
            ready[target.path] = (volume, refinement)
        except RevmedError as exc:
            run.events.failed(exc)
            failures.append(target.case.files[0])
    if not ready:
        with contextlib.suppress(OSError):
            output.rmdir()  # only when empty
        raise InputError(f"{len(failures)} of {len(targets)} scan(s) failed; nothing was "
                         "written")
    model = _train(f"{len(ready)} scan(s)", [r[0] for r in ready.values()],
                   [r[1] for r in ready.values()], run)
    _save(model, run.models.get(None), run)
    run_targets([t for t in targets if t.path in ready], run.plan, output, True,
                lambda t: _refine_write(model, *ready[t.path], t, run.models.get(None), run),
                extra_failures=failures, what="scan", events=run.events)
