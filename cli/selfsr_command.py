"""`revmed selfsr`: super-resolve thick-slice scans from their own in-plane detail.

The work is in ``revmed.selfsr``; the batch rules (outputs checked first, a failed case
reported and the others done, ``--skip-existing``) are ``revmed infer``'s
(``revmed.io.batch``), and outputs are written as ``revmed infer`` writes them
(``revmed.inference.outputs``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from revmed.cli import output
from revmed.cli.root import app, check_dicom_geometry, dicom_geometry_option
from revmed.errors import InputError, OutputError, RevmedError

#: The name of the shared model in a batch's output folder (``--shared --keep-model``).
SHARED_MODEL = "selfsr-shared.pt"


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
    steps: int = typer.Option(400, "--steps", min=1, help="Most training steps."),
    time_limit: float = typer.Option(240.0, "--time-limit", min=0.0, help="Most training "
                                     "seconds per model (0: no limit)."),
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
    was trained on pass through as interpolated. With the same --seed and --steps (and a
    --time-limit that is not reached) a CPU run repeats exactly.

    Example: revmed selfsr thick.nii.gz -o iso.nii.gz --keep-model
    """
    from revmed.io.batch import check_batch_options, run_targets, select_targets, single_claim
    from revmed.io.targets import plan_targets
    from revmed.runtime import resolve_device
    from revmed.selfsr import check_preset

    check_batch_options(overwrite, skip_existing)
    options = {"factor": factor, "axis": axis, "thickness": slice_thickness,
               "profile": slice_profile, "dicom_geometry": check_dicom_geometry(dicom_geometry)}
    _check_plan_options(options)
    plan = plan_targets([input_path], output_path, fmt, series)
    if shared and not plan.batch:
        raise InputError("--shared trains one model for a folder of scans; SCAN is one scan")
    targets = select_targets(plan, overwrite=overwrite, skip_existing=skip_existing,
                             note=output.notes(quiet))
    check_preset(preset, set_)
    models = _model_paths(targets, output_path, keep_model, shared, overwrite)
    options["orientations"] = orientations
    training = {"preset": preset, "overrides": list(set_), "seed": seed, "steps": steps,
                "time_limit": time_limit, "device": resolve_device(device)}
    with single_claim(plan, targets, overwrite, skip_existing):
        if shared:
            _run_shared(targets, plan, options, training, models, quiet, output_path)
        else:
            run_targets(targets, plan, output_path, overwrite, lambda target: _one(
                target, plan, options, training, models, quiet), skip_existing, what="scan",
                on_failure=output.report_failure, on_interrupt=output.error)


def _check_plan_options(options: dict) -> None:
    """The refinement options, checked before any file is read."""
    from revmed.errors import ConfigError
    from revmed.selfsr import AXES, PROFILES

    if options["axis"] not in ("auto", *AXES):
        raise ConfigError(f"--axis {options['axis']}: choose auto, i, j or k")
    if options["profile"] not in PROFILES:
        raise ConfigError(f"--slice-profile {options['profile']}: choose "
                          f"{' or '.join(PROFILES)}")
    if options["factor"] != "auto":
        try:
            float(options["factor"])
        except ValueError:
            raise ConfigError(f"--factor {options['factor']}: give auto or a number such "
                              "as 4 or 7.14") from None
    thickness = options["thickness"]
    if thickness is not None and not thickness > 0:
        raise ConfigError(f"--slice-thickness {thickness:g}: must be a positive number of mm")


def _plan_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k not in ("orientations", "dicom_geometry")}


def _model_paths(targets: list, output_path: Path, keep_model: bool, shared: bool,
                 overwrite: bool) -> dict:
    """Where each kept model goes (target path -> model path; ``None`` -> the shared one),
    checked before any work: an existing model is replaced only with ``--overwrite``."""
    from revmed.io.atomic import check_output_file
    from revmed.selfsr import model_path_for

    if not keep_model:
        return {}
    paths = ({None: output_path / SHARED_MODEL} if shared else
             {t.path: Path(model_path_for(t.path)) for t in targets})
    for path in paths.values():
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: exists (the model --keep-model would write); use "
                              "--overwrite to replace it")
        if not shared:
            check_output_file(path, option="keep_model")
    return paths


def _read(target, dicom_geometry: str):
    from revmed.io import read_volume

    case = target.case
    if case.problem:
        raise InputError(case.problem)
    if len(case.files) > 1:
        raise InputError(f"{case.files[0]}: a case of several channel files; selfsr refines "
                         "one-channel scans")
    return read_volume(case.files[0], case.series, dicom_geometry=dicom_geometry)


def _train(name: str, volumes: list, plans: list, training: dict, quiet: bool):
    """Train with a progress bar showing the loss and the time left."""
    from revmed.selfsr import train_for

    with output.progress(f"selfsr {name}", training["steps"], quiet) as update:
        def report(step: int, steps: int, loss: float, left: float) -> None:
            update(step, steps, f"loss {loss:.4f} ETA {int(left) // 60}:{int(left) % 60:02d}")

        model = train_for(volumes, plans, progress=report, **training)
    output.note(f"trained {model.steps} step(s) in {model.seconds:.0f} s, loss "
                f"{model.loss:.4f}", quiet)
    return model


def _refine_write(model, volume, plan, target, fmt: str, model_path, device, quiet,
                  orientations: int) -> None:
    """Refine ``volume`` with ``model`` and write ``target`` atomically."""
    from revmed.inference.outputs import write_prediction
    from revmed.selfsr import refine, translator_for

    translator = translator_for(model, device, str(model_path or "selfsr model"))
    with output.progress(f"refine {target.name}", None, quiet) as update:
        result = refine(translator, volume, plan, device,
                        progress=lambda done, total: update(done, total),
                        orientations=orientations)
    write_prediction(translator, result, volume, target.path, fmt,
                     Path(model_path or "selfsr").name)
    output.stdout().print(f"wrote {target.path}")


def _save(model, path) -> None:
    from revmed.checkpoint import save_checkpoint

    if path is not None:
        save_checkpoint(path, model.checkpoint)
        output.stdout().print(f"wrote {path}")


def _one(target, plan, options: dict, training: dict, models: dict, quiet: bool) -> None:
    """One scan with a model of its own: read, plan, train, refine, write."""
    from revmed.selfsr import plan_for

    volume = _read(target, options["dicom_geometry"])
    refinement = plan_for(volume, **_plan_options(options))
    output.note(f"{target.name}: {refinement.describe()}", quiet)
    model = _train(target.name, [volume], [refinement], training, quiet)
    _refine_write(model, volume, refinement, target, plan.format, models.get(target.path),
                  training["device"], quiet, options["orientations"])
    _save(model, models.get(target.path))


def _run_shared(targets: list, plan, options: dict, training: dict, models: dict,
                quiet: bool, output_path: Path) -> None:
    """One model for every scan that reads and plans, then each scan refined with it (each
    output claimed as it is written, ``run_targets``)."""
    from revmed.selfsr import plan_for

    failures, ready = [], {}
    output_path.mkdir(parents=True, exist_ok=True)
    for target in targets:
        try:
            volume = _read(target, options["dicom_geometry"])
            refinement = plan_for(volume, **_plan_options(options))
            output.note(f"{target.name}: {refinement.describe()}", quiet)
            ready[target.path] = (volume, refinement)
        except RevmedError as exc:
            output.report_failure(exc)
            failures.append(target.case.files[0])
    if not ready:
        with contextlib.suppress(OSError):
            output_path.rmdir()  # only when empty
        raise InputError(f"{len(failures)} of {len(targets)} scan(s) failed; nothing was "
                         "written")
    model = _train(f"{len(ready)} scan(s)", [r[0] for r in ready.values()],
                   [r[1] for r in ready.values()], training, quiet)
    _save(model, models.get(None))
    from revmed.io.batch import run_targets

    run_targets([t for t in targets if t.path in ready], plan, output_path, True, lambda t:
                _refine_write(model, *ready[t.path], t, plan.format, models.get(None),
                              training["device"], quiet, options["orientations"]),
                extra_failures=failures, what="scan", on_failure=output.report_failure,
                on_interrupt=output.error)
