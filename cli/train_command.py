"""`revmed train`: train the model a preset describes, with resume and torchrun jobs."""

from __future__ import annotations

import re
import shlex
import signal
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Start a new run in an --out "
                                   "folder that holds files already (a run there is "
                                   "replaced)."),
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
    Ctrl-C, SIGTERM and SIGUSR1 stop after the current step, save last.pt and print the
    command that continues the run (exit 130, 143 and 138).

    Example: revmed train --preset demo-sr --data data/demo-sr --out runs/demo
    """
    from revmed.engine.distributed import Distributed

    job = Distributed.from_env()
    resolved = config.load_preset(preset, _overrides(set_, seed, precision, compile_,
                                                     channels_last))
    out = out if out is not None else _new_run_folder(resolved.name, resume, job)
    data_dir = data if data is not None else _default_data(resolved.data_dir, out, resume,
                                                           quiet)
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
    record, epochs, ran = _run(resolved, data_dir, out, device, (resume, overwrite), job,
                               again_text, silent)
    if job is not None and not job.is_main:
        return
    if json_:
        output.emit_json({"run": str(out), **record})
        return
    scores = ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                       if k.startswith("val_") and isinstance(v, float))
    if not ran:
        output.stdout().print(f"nothing to train: the run in {out} has done its {epochs} "
                              f"epoch(s) already (raise train.epochs to train longer); "
                              f"{scores or 'no validation scores'}")
        return
    output.stdout().print(f"trained {record.get('epoch', epochs)} epoch(s); "
                          f"{scores or 'no validation split'}; checkpoints in {out}")


def _overrides(set_: list[str], seed: Optional[int], precision: Optional[str],  # noqa: UP007
               compile_: Optional[bool], channels_last: Optional[bool]) -> list[str]:  # noqa: UP007
    """The ``--set`` items of the command line, then those its own flags stand for."""
    return (list(set_) + ([f"train.seed={seed}"] if seed is not None else [])
            + ([f"train.precision={precision!r}"] if precision is not None else [])
            + _flag_overrides("train", compile_, channels_last))


def _default_data(preset_data: str, out: Path, resume: bool, quiet: bool) -> Path:
    """The data a run trains on without --data: when resuming, the folder the run trained on
    (recorded in its last.pt), said on stderr; else ``preset_data``, the preset's
    ``data_dir``."""
    from revmed.engine.run_folder import recorded_data

    path = recorded_data(out) if resume else None
    if path is not None:
        output.note(f"resuming on {path}, the data the run trained on", quiet)
        return path
    return Path(preset_data)


def _new_run_folder(name: str, resume: bool, job) -> Path:
    """``runs/NAME-TIMESTAMP`` for a new single-process run (others must name theirs)."""
    if resume:
        raise InputError("--resume needs --out RUN_DIR (the run to continue)")
    if job is not None:
        raise InputError("under torchrun give --out RUN_DIR: every process must name the "
                         "same run folder")
    # the name as one plain folder name: a preset name never leads out of runs/
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".") or "run"
    return Path("runs") / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def _run(preset, data_dir: Path, out: Path, device: str, mode: tuple[bool, bool], job,
         again_text: str, silent: bool) -> tuple[dict, int, bool]:
    """Train with a progress bar (``mode``: resume, overwrite); returns the last epoch's
    record, the epochs done and whether any epoch ran now. On Ctrl-C, SIGTERM or SIGUSR1 says
    what was saved and how to continue, and exits 128 + the signal's number."""
    from revmed.engine.signals import TrainingInterrupted
    from revmed.engine.setup import setup_training
    from revmed.runtime import resolve_device

    finished = False
    try:
        trainer = setup_training(preset, data_dir, out, resolve_device(device), resume=mode[0],
                          job=job, overwrite=mode[1])
        start = trainer.epoch
        processes = f", {job.world_size} processes" if job is not None else ""
        output.note(f"training {preset.name} on {data_dir} ({trainer.device}"
                    f"{processes}); run folder {out}", silent)
        with output.progress("train", None, silent) as update:
            record = trainer.fit(progress=_reporter(update, start, preset.train.time_limit,
                                                    silent))
        finished = True
        return record, trainer.epoch, trainer.epoch > start
    except TrainingInterrupted as stop:
        output.note(f"interrupted{_by(stop.signum)}: saved {stop.checkpoint} at epoch "
                    f"{stop.epoch} step {stop.step}; continue with: {again_text}",
                    job is not None and not job.is_main)
        raise typer.Exit(128 + stop.signum) from None
    except KeyboardInterrupt as stop:  # before training started, or a second signal
        last, signum = out / "last.pt", getattr(stop, "signum", signal.SIGINT)
        output.note(f"interrupted{_by(signum)}: {last} is unchanged (the last save); continue "
                    f"with: {again_text}" if last.is_file() else
                    f"interrupted{_by(signum)} before the first checkpoint; nothing to resume "
                    f"in {out}")
        raise typer.Exit(128 + signum) from None
    finally:
        if job is not None:
            job.leave(wait_for_others=finished)


def _reporter(update, start_epoch: int, time_limit: float, silent: bool):
    """The ``Trainer.fit`` progress callback: the bar with the loss and the time left for the
    whole run (from the pace so far, and the time limit), and where stderr is not a terminal
    (a scheduler's log) one plain line per epoch instead."""
    from revmed.engine.run_folder import epoch_line

    clock = time.monotonic()
    plain = not silent and not output.is_terminal()

    def report(event) -> None:
        if event.event == "epoch":
            if plain:
                output.note(epoch_line(event.logs, event.epochs))
            return
        done = (event.epoch - 1 - start_epoch) * event.steps + event.step
        total = max((event.epochs - start_epoch) * event.steps, 1)
        elapsed = time.monotonic() - clock
        left = elapsed * (total - done) / max(done, 1)
        if time_limit:
            left = min(left, max(time_limit - elapsed, 0.0))
        loss = event.logs.get("g_loss", event.logs.get("loss", 0.0))
        update(event.step, event.steps, f"epoch {event.epoch}/{event.epochs} loss {loss:.3f} "
               f"run ETA {int(left // 60)}:{int(left % 60):02d}")

    return report


def _by(signum: int) -> str:
    """`` by SIGTERM`` for a signal other than Ctrl-C's, which needs no name."""
    return "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"


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
