"""`revmed train`: train the model a preset describes, with resume and torchrun jobs."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

import typer

from revmed import config
from revmed.cli import output
from revmed.cli.root import app
from revmed.errors import InputError


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
    from revmed.engine.distributed import Distributed

    job = Distributed.from_env()
    resolved = config.load_preset(preset, _overrides(set_, seed, precision, compile_,
                                                     channels_last))
    data_dir = data if data is not None else Path(resolved.data_dir)
    out = out if out is not None else _new_run_folder(resolved.name, resume, job)
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
    record, epochs = _run(resolved, data_dir, out, device, resume, job, again_text, silent)
    if job is not None and not job.is_main:
        return
    if json_:
        output.emit_json({"run": str(out), **record})
        return
    scores = ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                       if k.startswith("val_") and isinstance(v, float))
    output.stdout().print(f"trained {record.get('epoch', epochs)} epoch(s); "
                          f"{scores or 'no validation split'}; checkpoints in {out}")


def _overrides(set_: list[str], seed: Optional[int], precision: Optional[str],  # noqa: UP007
               compile_: Optional[bool], channels_last: Optional[bool]) -> list[str]:  # noqa: UP007
    """The ``--set`` items of the command line, then those its own flags stand for."""
    return (list(set_) + ([f"train.seed={seed}"] if seed is not None else [])
            + ([f"train.precision={precision!r}"] if precision is not None else [])
            + _flag_overrides("train", compile_, channels_last))


def _new_run_folder(name: str, resume: bool, job) -> Path:
    """``runs/NAME-TIMESTAMP`` for a new single-process run (others must name theirs)."""
    if resume:
        raise InputError("--resume needs --out RUN_DIR (the run to continue)")
    if job is not None:
        raise InputError("under torchrun give --out RUN_DIR: every process must name the "
                         "same run folder")
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _run(preset, data_dir: Path, out: Path, device: str, resume: bool, job, again_text: str,
         silent: bool) -> tuple[dict, int]:
    """Train with a progress bar; returns the last epoch's record and the epochs done. On
    Ctrl-C says what was saved and how to continue, and exits 130."""
    from revmed.engine.trainer import Trainer, TrainingInterrupted
    from revmed.runtime import resolve_device

    finished = False
    try:
        trainer = Trainer(preset, data_dir, out, resolve_device(device), resume=resume, job=job)
        processes = f", {job.world_size} processes" if job is not None else ""
        output.note(f"training {preset.name} on {data_dir} ({trainer.device}"
                    f"{processes}); run folder {out}", silent)
        with output.progress("train", None, silent) as update:
            def report(event) -> None:
                if event.event == "step":
                    loss = event.logs.get("g_loss", event.logs.get("loss", 0.0))
                    update(event.step, event.steps,
                           f"epoch {event.epoch}/{event.epochs} loss {loss:.3f}")
            record = trainer.fit(progress=report)
        finished = True
        return record, trainer.epoch
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
