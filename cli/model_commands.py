"""Model commands: `revmed train`, `revmed infer`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from revmed import config
from revmed.cli import output
from revmed.cli.app import app
from revmed.errors import InputError, OutputError, RevmedError

MODEL_ENV = "REVMED_MODEL"


@app.command("train")
def train(
    preset: str = typer.Option(..., "--preset", "-p", help="Preset name or .toml path."),
    data: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--data", help="Dataset folder or patchify folder (default: the preset's "
        "data_dir)."),
    out: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--out", help="Run folder (default: runs/PRESET-TIMESTAMP)."),
    set_: list[str] = typer.Option([], "--set", help="Override a preset key: --set k=v."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: Optional[int] = typer.Option(  # noqa: UP007
        None, "--seed", help="Seed (default: the preset's train.seed)."),
    precision: Optional[str] = typer.Option(  # noqa: UP007
        None, "--precision", help="fp32, bf16 or fp16 autocast (default: the preset's "
        "train.precision)."),
    compile_: Optional[bool] = typer.Option(  # noqa: UP007
        None, "--compile/--no-compile", help="torch.compile the networks' plain sub-networks "
        "(default: the preset's train.compile)."),
    channels_last: Optional[bool] = typer.Option(  # noqa: UP007
        None, "--channels-last/--no-channels-last", help="Weights and batches in "
        "channels-last-3d order (default: the preset's train.channels_last)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_: bool = typer.Option(False, "--json", help="Print the last epoch's metrics as JSON."),
) -> None:
    """Train the model a preset describes; checkpoints last.pt and best.pt in the run folder.

    The run folder also holds preset.toml (the resolved preset) and metrics.jsonl (one line per
    epoch: losses, validation PSNR and SSIM, learning rate). Under torchrun each process takes
    an equal slice of every batch (DistributedDataParallel) and rank 0 writes the run folder.

    Example: revmed train --preset demo-sr --data data/demo-sr --out runs/demo
    """
    import shlex

    from revmed.engine.distributed import Distributed
    from revmed.engine.trainer import Trainer, TrainingInterrupted, resolve_device

    job = Distributed.from_env()
    overrides = list(set_) + ([f"train.seed={seed}"] if seed is not None else []) + \
        ([f"train.precision={precision!r}"] if precision is not None else []) + \
        _flag_overrides("train", compile_, channels_last)
    resolved = config.load_preset(preset, overrides)
    data_dir = data if data is not None else Path(resolved["data_dir"])
    if out is None:
        if resume:
            raise InputError("--resume needs --out RUN_DIR (the run to continue)")
        if job is not None:
            raise InputError("under torchrun give --out RUN_DIR: every process must name the "
                             "same run folder")
        out = Path("runs") / f"{resolved['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    again = ["revmed", "train", "--preset", preset,
             *(["--data", str(data)] if data is not None else []), "--out", str(out),
             *[a for item in set_ for a in ("--set", item)],
             *(["--seed", str(seed)] if seed is not None else []),
             *(["--precision", precision] if precision is not None else []),
             *_flag_arguments(compile_, channels_last),
             *(["--device", device] if device != "auto" else []), "--resume"]
    again_text = " ".join(shlex.quote(a) for a in again)
    if job is not None:
        again_text = f"torchrun --nproc-per-node {job.world_size} -m {again_text}"
    silent = quiet or json_ or (job is not None and not job.is_main)
    finished = False
    try:
        trainer = Trainer(resolved, data_dir, out, resolve_device(device), resume=resume,
                          job=job)
        processes = f", {job.world_size} processes" if job is not None else ""
        output.note(f"training {resolved['name']} on {data_dir} ({trainer.device}"
                    f"{processes}); run folder {out}", silent)
        with output.progress("train", None, silent) as update:
            def report(event) -> None:
                if event.event == "step":
                    loss = event.logs.get("g_loss", event.logs.get("loss", 0.0))
                    update(event.step, event.steps,
                           f"epoch {event.epoch}/{event.epochs} loss {loss:.3f}")
            record = trainer.fit(progress=report)
        finished = True
    except TrainingInterrupted as stop:
        output.note(f"interrupted: saved {stop.checkpoint} at epoch {stop.epoch} step "
                    f"{stop.step}; continue with: {again_text}",
                    job is not None and not job.is_main)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C: nothing saved
        last = out / "last.pt"
        output.note(f"interrupted: {last} is unchanged (the last save); continue with: "
                    f"{again_text}" if last.is_file() else
                    f"interrupted before the first checkpoint; nothing to resume in {out}")
        raise typer.Exit(130) from None
    finally:
        if job is not None:
            job.leave(wait_for_others=finished)
    if job is not None and not job.is_main:
        return
    if json_:
        output.emit_json({"run": str(out), **record})
        return
    scores = ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                       if k.startswith("val_") and isinstance(v, float))
    output.stdout().print(f"trained {record.get('epoch', trainer.epoch)} epoch(s); "
                          f"{scores or 'no validation split'}; checkpoints in {out}")


def _flag_overrides(section: str, compile_: Optional[bool],  # noqa: UP007
                    channels_last: Optional[bool]) -> list[str]:  # noqa: UP007
    """``--set`` items for the ``--compile`` and ``--channels-last`` choices that were given."""
    given = {"compile": compile_, "channels_last": channels_last}
    return [f"{section}.{key}={str(value).lower()}" for key, value in given.items()
            if value is not None]


def _flag_arguments(compile_: Optional[bool],  # noqa: UP007
                    channels_last: Optional[bool]) -> list[str]:  # noqa: UP007
    """The command-line flags that repeat the ``--compile`` and ``--channels-last`` choices."""
    given = {"compile": compile_, "channels-last": channels_last}
    return [f"--{'' if value else 'no-'}{flag}" for flag, value in given.items()
            if value is not None]


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


def _cases(inputs: list[Path], output_path: Path, channels: list[str]):
    """``[(sources, target)]``: what to read for each output file.

    Several INPUT files are the channels of one case. One folder holding volume files, or
    case folders of one file per channel (named after the model's channels), is a batch: one
    output per case, in the output folder. Any other folder is one DICOM series.
    """
    from revmed.atomic import full_suffix
    from revmed.data.layout import volume_suffix

    def stem(path: Path) -> str:
        return path.name[: -len(full_suffix(path))] if path.is_file() else path.name

    if len(inputs) > 1:
        return [(inputs, output_path)], False
    (source,) = inputs
    entries = sorted(p for p in source.iterdir() if not p.name.startswith(".")) \
        if source.is_dir() else []
    files = [p for p in entries if p.is_file() and volume_suffix(p)]
    case_dirs = [p for p in entries if p.is_dir() and channels
                 and {stem(f) for f in p.iterdir() if f.is_file()} >= set(channels)]
    if not files and not case_dirs:
        return [([source], output_path)], False
    cases = [([p], output_path / f"{stem(p)}.nii.gz") for p in files]
    for folder in case_dirs:
        by_name = {stem(f): f for f in folder.iterdir() if f.is_file()}
        cases.append(([by_name[c] for c in channels], output_path / f"{folder.name}.nii.gz"))
    return cases, True


@app.command("infer")
def infer(
    inputs: list[Path] = typer.Argument(
        ..., metavar="INPUT...", help="Volume file, DICOM series folder, or folder of cases; "
        "several files are the channels of one case (in the model's channel order)."),
    output_path: Path = typer.Option(..., "--output", "-o",
                                     help="Output NIfTI file (a folder when INPUT is one)."),
    model: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--model", "-m", help=f"Checkpoint (default: ${MODEL_ENV}, else the newest "
        "runs/*/best.pt)."),
    reverse: bool = typer.Option(False, "--reverse", help="RevGAN: run G (Y -> X) instead of F."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    overlap: Optional[float] = typer.Option(  # noqa: UP007
        None, "--overlap", min=0.0, max=0.95, help="Sliding-window overlap (default: the "
        "checkpoint preset's)."),
    precision: Optional[str] = typer.Option(  # noqa: UP007
        None, "--precision", help="fp32, bf16 or fp16 autocast (default: the checkpoint "
        "preset's infer.precision)."),
    compile_: Optional[bool] = typer.Option(  # noqa: UP007
        None, "--compile/--no-compile", help="torch.compile the network's plain sub-networks "
        "(default: the checkpoint preset's infer.compile)."),
    channels_last: Optional[bool] = typer.Option(  # noqa: UP007
        None, "--channels-last/--no-channels-last", help="Weights and windows in "
        "channels-last-3d order (default: the checkpoint preset's infer.channels_last)."),
    series: Optional[str] = typer.Option(  # noqa: UP007
        None, "--series", help="SeriesInstanceUID, for a DICOM folder with several series."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Leave existing outputs alone and do the rest (to finish "
        "an interrupted batch)."),
    num_parts: int = typer.Option(1, "--num-parts", min=1, help="Split a folder's cases into "
                                  "this many parts (for job arrays)."),
    part_id: int = typer.Option(0, "--part-id", min=0, help="Which part this job does: 0 to "
                                "--num-parts - 1 (every K-th case, in name order)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Apply a trained model: a RevGAN (F, or G with --reverse) or a segmentation network.

    RevGAN outputs are in the input's units (HU for CT); for super-resolution they have the
    finer spacing over the same physical extent and direction. Segmentation outputs are BraTS
    label maps (0, 1, 2, 4) on the input's grid. Each output is written atomically. In a batch,
    a case that fails is reported and the others are still done; the command then exits 2.

    Example: revmed infer scan.nii.gz -o sr.nii.gz --model runs/demo/best.pt
    """
    from revmed.atomic import check_output_folder
    from revmed.engine.trainer import resolve_device
    from revmed.inference import load_predictor

    if precision is not None and precision not in config.PRECISIONS:
        raise InputError(f"--precision {precision}: choose one of "
                         f"{', '.join(config.PRECISIONS)}")
    if overwrite and skip_existing:
        raise InputError("--overwrite and --skip-existing contradict each other; give one")
    if part_id >= num_parts:
        raise InputError(f"--part-id {part_id}: must be below --num-parts {num_parts}")
    # an unwritable destination is reported before the model is loaded or any work is done
    check_output_folder(output_path if output_path.is_dir() else output_path.parent)
    checkpoint = _pick_model(model)
    predictor = load_predictor(checkpoint, resolve_device(device), compile=compile_,
                               channels_last=channels_last)
    cases, batch = _cases(inputs, output_path, predictor.data.get("channels", []))
    if batch and output_path.exists() and not output_path.is_dir():
        raise OutputError(f"{output_path}: INPUT is a folder of cases, so the output must be "
                          "a folder")
    if not batch and output_path.is_dir():
        raise OutputError(f"{output_path}: is a folder; give an output file name")
    if num_parts > 1:
        if not batch:
            raise InputError("--num-parts splits a folder of cases; INPUT is a single case")
        cases = cases[part_id::num_parts]
        output.note(f"part {part_id} of {num_parts}: {len(cases)} case(s)", quiet)
    existing = [target for _, target in cases if target.exists()]
    if skip_existing:
        cases = [(sources, target) for sources, target in cases if not target.exists()]
        if existing:
            output.note(f"skipping {len(existing)} existing output(s)", quiet)
    elif existing and not overwrite:
        raise OutputError(f"{existing[0]}: exists; use --overwrite to replace it or "
                          "--skip-existing to keep it")
    output.note(f"model: {checkpoint}")  # always said: which model made the output
    if batch:
        output_path.mkdir(parents=True, exist_ok=True)
    failures = []
    for sources, target in cases:
        try:
            _infer_one(predictor, sources, target, reverse, overlap, series, quiet, precision)
        except RevmedError as exc:
            if not batch:
                raise
            output.error(str(exc))
            failures.append(sources[0])
    if failures:
        names = ", ".join(str(p) for p in failures[:5]) + (" ..." if len(failures) > 5 else "")
        raise InputError(f"{len(failures)} of {len(cases)} case(s) failed ({names}); the other "
                         f"{len(cases) - len(failures)} were written to {output_path}")


def _infer_one(predictor, sources: list[Path], target: Path, reverse: bool,
               overlap: Optional[float], series: Optional[str], quiet: bool,  # noqa: UP007
               precision: Optional[str]) -> None:  # noqa: UP007
    """Read one case, predict it and write ``target`` atomically."""
    from revmed.io import read_channels, read_volume, write_volume

    volume = (read_channels(sources) if len(sources) > 1
              else read_volume(sources[0], series=series))
    with output.progress(f"infer {sources[0].name}", None, quiet) as update:
        result = predictor.predict(volume, reverse=reverse, overlap=overlap,
                                   progress=lambda done, total: update(done, total),
                                   precision=precision)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_volume(result, target, dtype=predictor.output_dtype)
    output.stdout().print(f"wrote {target}")
