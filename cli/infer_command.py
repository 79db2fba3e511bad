"""`revmed infer`: apply a trained model to a volume, a DICOM series or tree, or a folder of
cases."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import typer

from revmed.cli import output
from revmed.cli.root import app, check_dicom_geometry, dicom_geometry_option
from revmed.errors import ConfigError, InputError, OutputError, RevmedError
from revmed.preset import PRECISIONS

MODEL_ENV = "REVMED_MODEL"
DTYPES = ("float32", "input")


def _pick_model(model: Optional[Path]) -> Path:  # noqa: UP007
    from revmed.inference import newest_checkpoint

    if model is not None:
        return model
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    newest = newest_checkpoint()
    if newest is None:
        raise InputError(f"no model given: pass --model CKPT, set {MODEL_ENV}, or train one "
                         "(runs/*/best.pt is used by default)")
    return newest


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
    from revmed.inference import load_predictor
    from revmed.io.targets import plan_targets
    from revmed.runtime import resolve_device

    _check_options(precision, overwrite, skip_existing, num_parts, part_id, dtype)
    check_dicom_geometry(dicom_geometry)
    # outputs, formats and inputs are checked before the model is loaded or any work is done
    plan = plan_targets(inputs, output_path, fmt, series)
    targets = _select(plan, num_parts, part_id, overwrite, skip_existing, quiet)
    with single_claim(plan, targets, overwrite, skip_existing):
        checkpoint = _pick_model(model)
        predictor = load_predictor(checkpoint, resolve_device(device), compile=compile_,
                                   channels_last=channels_last)
        _check_model_outputs(predictor, plan, targets, reverse, dtype)
        output.note(f"model: {checkpoint}", quiet)
        if len(inputs) > 1:
            _note_channels(inputs, list(predictor.card.data.channels), quiet)
        options = {"reverse": reverse, "overlap": overlap, "precision": precision,
                   "tiling": "windows" if windows else "auto"}
        run_targets(targets, plan, output_path, overwrite, lambda target: _infer_one(
            predictor, target, plan.format, dtype, checkpoint, quiet, options, dicom_geometry),
            skip_existing)


@contextlib.contextmanager
def claimed(path: Path, overwrite: bool, skip_existing: bool = False) -> Iterator[bool]:
    """Hold a claim on the output ``path`` (``OutputClaim``) for the block, which gets
    whether to make the output: another run writing it now is an ``OutputError``; one that
    another run finished since the outputs were checked is refused (replaced with
    ``overwrite``; left alone with ``skip_existing`` when it reads)."""
    from revmed.engine.folder_lock import OutputClaim

    made = _make_folder(path.parent)
    claim = OutputClaim(path)
    try:
        claim.acquire()
    except BaseException:
        _remove_if_empty(made)
        raise
    try:
        make = True
        if path.exists() and not overwrite:
            if not skip_existing:
                raise OutputError(f"{path}: exists (another run wrote it meanwhile); use "
                                  "--overwrite to replace it")
            make = output_problem(path) is not None
        yield make
    finally:
        claim.release()
        _remove_if_empty(made)


def _make_folder(folder: Path) -> Path | None:
    """Make ``folder`` (and what is missing above it); returns the topmost folder made, or
    None when it existed. ``OutputError`` when it cannot be made."""
    top = None
    for above in [folder, *folder.parents]:
        if above.exists() or not str(above):
            break
        top = above
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create it ({exc.strerror or exc})") from None
    return top


def _remove_if_empty(top: Path | None) -> None:
    """Remove the folders ``_make_folder`` made, from the deepest up, while they are empty."""
    if top is None:
        return
    for folder in sorted([p for p in top.rglob("*") if p.is_dir()], reverse=True) + [top]:
        with contextlib.suppress(OSError):
            folder.rmdir()


def output_problem(path: Path) -> str | None:
    """Why the existing output ``path`` is no usable result (it does not read: truncated,
    empty, damaged), or None when it reads."""
    from revmed.io import read_volume

    try:
        read_volume(path)
    except RevmedError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def single_claim(plan, targets: list, overwrite: bool, skip_existing: bool = False):
    """The claim on a single output, taken before the model is loaded (a batch claims each
    output as it comes to it, in ``run_targets``)."""
    if plan.batch or not targets:
        return contextlib.nullcontext()
    return claimed(targets[0].path, overwrite or skip_existing)


def run_targets(targets: list, plan, output_path: Path, overwrite: bool,
                work: Callable[[object], None], skip_existing: bool = False,
                extra_failures: list | None = None, what: str = "case") -> None:
    """``work(target)`` for each target, each output claimed while it is made. In a batch a
    case that fails is said and the others are done, then one ``InputError`` counts the
    failures; a batch folder this run made and left empty is removed; Ctrl-C says how far
    the batch got before it ends the run (exit code 130)."""
    made = plan.batch and not output_path.exists()
    if plan.batch:
        output_path.mkdir(parents=True, exist_ok=True)
    failures, written = list(extra_failures or []), 0
    try:
        for target in targets:
            try:
                with (claimed(target.path, overwrite, skip_existing) if plan.batch
                      else contextlib.nullcontext(True)) as make:
                    if make:
                        work(target)
                written += 1
            except RevmedError as exc:
                if not plan.batch:
                    raise
                output.error(output.describe(exc))
                failures.append(target.case.files[0])
    except KeyboardInterrupt:
        if plan.batch:
            output.error(f"interrupted: {written} of {len(targets)} {what}(s) were written to "
                         f"{output_path}; run again with --skip-existing to do the rest")
        raise
    finally:
        if made and written == 0:
            with contextlib.suppress(OSError):
                output_path.rmdir()  # only when empty
    if failures:
        names = ", ".join(str(p) for p in failures[:5]) + (" ..." if len(failures) > 5 else "")
        rest = (f"the other {written} were written to {output_path}" if written else
                "nothing was written")
        total = len(targets) + len(extra_failures or [])
        raise InputError(f"{len(failures)} of {total} {what}(s) failed ({names}); {rest}")


def _check_options(precision: Optional[str], overwrite: bool, skip_existing: bool,  # noqa: UP007
                   num_parts: int, part_id: int, dtype: str) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if overwrite and skip_existing:
        raise InputError("--overwrite and --skip-existing contradict each other; give one")
    if part_id >= num_parts:
        raise InputError(f"--part-id {part_id}: must be below --num-parts {num_parts}")


def _select(plan, num_parts: int, part_id: int, overwrite: bool, skip_existing: bool,
            quiet: bool) -> list:
    """The targets this run does: its part of a batch, less the existing outputs with
    ``skip_existing``; an existing output without ``overwrite`` is an ``OutputError``."""
    targets = plan.targets
    if num_parts > 1:
        if not plan.batch:
            raise InputError("--num-parts splits a folder of cases; INPUT is a single case")
        targets = targets[part_id::num_parts]
        output.note(f"part {part_id} of {num_parts}: {len(targets)} case(s)", quiet)
    existing = [t.path for t in targets if t.path.exists()]
    if skip_existing:
        broken = {path: output_problem(path) for path in existing}
        for path, problem in broken.items():
            if problem is not None:
                output.note(f"redoing {path}: it does not read ({problem})", quiet)
        targets = [t for t in targets if not t.path.exists() or broken.get(t.path)]
        from revmed.engine.folder_lock import clear_stale_claim

        for path in (path for path, problem in broken.items() if problem is None):
            clear_stale_claim(path)  # what a killed run left beside an output it finished
        kept = sum(problem is None for problem in broken.values())
        if kept:
            output.note(f"skipping {kept} existing output(s)", quiet)
    elif existing and not overwrite:
        raise OutputError(f"{existing[0]}: exists; use --overwrite to replace it or "
                          "--skip-existing to keep it")
    for target in targets:
        if target.case.skip:
            output.note(f"passing over {target.case.files[0]}: {target.case.skip}", quiet)
    return [t for t in targets if not t.case.skip]


def _check_model_outputs(predictor, plan, targets: list, reverse: bool, dtype: str) -> None:
    """What the outputs need of the model, checked before any case is read: one channel for
    a DICOM image series, DICOM inputs for a DICOM-SEG, an image model for ``--dtype input``."""
    from revmed.inference import Segmenter

    segments = isinstance(predictor, Segmenter)
    if segments and dtype != "float32":
        raise ConfigError(f"--dtype {dtype}: applies to image outputs; {predictor.source} "
                          "writes label maps (uint8)")
    if plan.format != "dicom":
        return
    data = predictor.card.data
    channels = data.in_channels if reverse else data.out_channels
    if not segments and channels != 1:
        raise OutputError(f"format dicom: a DICOM series holds one channel, and "
                          f"{predictor.source} makes {channels}; choose another format",
                          option="format")
    if segments:
        for target in targets:
            if not target.case.problem and not _is_dicom(target.case.files[0]):
                raise OutputError(f"{target.path}: a DICOM-SEG refers to the DICOM series it "
                                  f"segments, and {target.case.files[0]} is not DICOM; "
                                  "choose another --format")


def _is_dicom(path: Path) -> bool:
    from revmed.io.dicom import is_dicom_file
    from revmed.io.formats import DICOM_SUFFIXES

    return path.is_dir() or path.name.lower().endswith(DICOM_SUFFIXES) or is_dicom_file(path)


def _note_channels(inputs: list[Path], channels: list[str], quiet: bool) -> None:
    """Say that several INPUT files are one case's channels, and in which order."""
    from revmed.io.channels import match_channel_files

    ordered = match_channel_files(inputs, channels)
    how = (f"ordered as the model's channels ({', '.join(channels)})" if ordered else
           "in the order given (their names do not match the model's channels"
           f"{': ' + ', '.join(channels) if channels else ''})")
    output.note(f"{len(inputs)} INPUT files are taken as the channels of one case, {how}; to "
                "run each file as a case of its own, put them in a folder and give the folder",
                quiet)


def _infer_one(predictor, target, fmt: str, dtype: str, checkpoint: Path, quiet: bool,
               options: dict, dicom_geometry: str = "resample") -> None:
    """Read one case, predict it and write its target atomically."""
    from revmed.io import read_channels, read_volume
    from revmed.io.channels import match_channel_files

    case = target.case
    if case.problem:
        raise InputError(case.problem)
    files = list(case.files)
    if len(files) > 1:
        files = match_channel_files(files, list(predictor.card.data.channels)) or files
    volume = (read_channels(files) if len(files) > 1 else
              read_volume(files[0], case.series, dicom_geometry=dicom_geometry))
    with output.progress(f"infer {target.name}", None, quiet) as update:
        result = predictor.predict(volume, progress=lambda done, total: update(done, total),
                                   **options)
    _write(predictor, result, volume, target.path, fmt, dtype, checkpoint, quiet)
    output.stdout().print(f"wrote {target.path}")


def _write(predictor, result, volume, path: Path, fmt: str, dtype: str, checkpoint: Path,
           quiet: bool) -> None:
    """Write ``result`` (computed from ``volume``) to ``path`` as ``fmt``."""
    from revmed.io import write_volume
    from revmed.io.dicom.reader import geometry_record

    result.meta.update(geometry_record(volume))
    if fmt == "dicom":
        task, uid = predictor.card.task, volume.meta.get("series_uid")
        extra = {}
        if result.meta.get("units") == "label":  # a DICOM-SEG: its segments' names
            label_set = predictor.card.data.labels
            extra["names"] = {value: name for name, value in label_set.labels.items()}
        write_volume(result, path, format="dicom", like=volume,
                     description=f"revmed {task} {volume.meta.get('series_description', '')}",
                     derivation=f"revmed {task} with model {checkpoint.name}"
                     + (f" from series {uid}" if uid else ""), **extra)
        return
    write_volume(result, path, dtype=_output_dtype(predictor, result, volume, dtype, path, quiet))


def _output_dtype(predictor, result, volume, dtype: str, path: Path, quiet: bool):
    """The voxel type to write ``result`` in: the predictor's, or with ``--dtype input`` the
    input's integer type when the rounded values fit in it."""
    import numpy as np

    from revmed.io.stored import stored_dtype

    if dtype != "input":
        return predictor.output_dtype
    stored = stored_dtype(volume)
    if stored is None:
        output.note(f"{path}: written as float32; {volume.source} is not stored as integers",
                    quiet)
        return np.float32
    info, values = np.iinfo(stored), np.rint(result.array)
    if values.min() < info.min or values.max() > info.max:
        output.note(f"{path}: written as float32; its values ({values.min():g} to "
                    f"{values.max():g}) do not fit the input's {stored.name}", quiet)
        return np.float32
    return stored
