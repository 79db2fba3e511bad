"""The training loop of one run: epochs of steps, validation, checkpoints, interruptions.

The same loop trains the RevGAN (paired or unpaired objective, with PatchGAN critics) and the
segmentation networks (Dice + cross-entropy, no critics); ``TrainingStep`` decides the step,
``RunFolder`` keeps the run folder (``preset.toml``, ``metrics.jsonl``, ``last.pt``,
``best.pt``), ``Validator`` scores each epoch, ``epoch_batches`` orders the patches.
``resume=True`` continues from ``last.pt``: weights, optimisers, schedules, RNG state, epoch.

Interruptions. While ``fit`` runs in the main thread, the first Ctrl-C (SIGINT) only asks the
loop to stop: it stops at the next step boundary (a step, and an end-of-epoch validation and
save already under way, are finished first), saves ``last.pt`` with the position inside the
epoch (``step_in_epoch``, the epoch's loss sums so far, RNG states) and raises
``TrainingInterrupted`` (a ``KeyboardInterrupt``). A ``KeyboardInterrupt`` raised by the
``progress`` callback is handled the same way. Resuming skips the batches already done (an
epoch's patches and batch order depend only on the seed and the epoch), so an interrupted and
resumed run ends with the same weights as an uninterrupted one (on the CPU, where training is
deterministic). A partial epoch writes no ``metrics.jsonl`` line and never ``best.pt``; its
line is written once the epoch completes. A second Ctrl-C stops at once without saving:
``last.pt`` then keeps the previous save (files are written to a temporary name and renamed).
A killed process (SIGKILL, the out-of-memory killer) leaves ``last.pt`` as it was after the
last completed save, or no ``last.pt`` before the first one.

SIGTERM and SIGUSR1 are handled as Ctrl-C is (``revmed.engine.signals``);
``TrainingInterrupted.signum`` says which signal stopped the run.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from revmed.checkpoint import Checkpoint, ModelCard
from revmed.data.batches import batch_count, epoch_batches
from revmed.data.layout import load_dataset
from revmed.data.patchify import MANIFEST, read_manifest, require_dataset
from revmed.data.statistics import with_dataset_statistics
from revmed.data.training_patches import TrainingPatches
from revmed.engine.distributed import Distributed
from revmed.engine.run_folder import RunFolder, data_source
from revmed.engine.signals import TrainingInterrupted, deferred_signals
from revmed.engine.step import TrainingStep
from revmed.engine.validation import Validator, check_regions
from revmed.errors import CheckpointError, ConfigError, InputError, OutputError, RevmedError
from revmed.preset import Preset

#: Dataset kinds each objective can train on.
OBJECTIVE_DATA = {"paired": ("paired", "hr-only"), "unpaired": ("unpaired", "paired", "hr-only"),
                  "segmentation": ("segmentation",)}
class TrainingDiverged(RevmedError):
    """A training step gave a NaN or infinite loss. The state after it is not saved; the run
    folder keeps its last checkpoint, whose losses were finite."""


def _check_data_kind(data_dir: str | Path, preset: Preset) -> None:
    """``InputError`` when the data at ``data_dir`` is of a kind the preset's objective cannot
    train on; read from ``dataset.toml`` or the patch manifest, before any volume is."""
    require_dataset(data_dir, preset.synth)
    folder = Path(data_dir)
    kind = (read_manifest(folder)["kind"] if (folder / MANIFEST).is_file()
            else load_dataset(folder).kind)
    objective = preset.train.objective
    if kind not in OBJECTIVE_DATA[objective]:
        raise InputError(f"{data_dir}: holds a {kind} dataset, which cannot train the "
                         f"{objective} objective of preset {preset.name} (it trains on "
                         f"{' or '.join(OBJECTIVE_DATA[objective])} datasets)")


def _on_every_process(job: Distributed | None, check: Callable[[], Any]) -> Any:
    """``check()``, on every process of ``job``: if it fails on one, it fails on all (those
    whose own check passed say so), before any process writes."""
    if job is None:
        return check()
    try:
        result, failed = check(), None
    except RevmedError as exc:
        result, failed = None, exc
    if job.any(failed is not None)[0]:
        raise failed or OutputError("another process of this job refused the run folder")
    return result


@dataclass
class TrainEvent:
    """What the loop reports after each step (``event="step"``) and epoch (``"epoch"``)."""

    event: str
    epoch: int
    epochs: int
    step: int = 0
    steps: int = 0
    logs: dict[str, float] = field(default_factory=dict)


def _join(job: Distributed | None, device: torch.device, batch_size: int) -> torch.device:
    """This process's device, in the process group of ``job`` (a single process: ``device``)."""
    if job is None:
        return device
    device = job.device_for(device)
    if batch_size % job.world_size:
        raise ConfigError(f"train.batch_size {batch_size} must be a multiple of the "
                          f"{job.world_size} processes: each takes an equal slice of every batch")
    job.join(device)
    return device


class Trainer:
    """Trains the model a preset describes; see the module doc.

    Args:
        preset: a resolved preset (``revmed.config.load_preset``).
        data_dir: a dataset folder or a ``revmed patchify`` folder.
        run_dir: the run folder (made if missing).
        device: a torch device (with ``job``, its type: each process takes its own GPU).
        resume: continue from ``run_dir/last.pt``.
        job: this process's place in a ``torchrun`` job (``Distributed.from_env()``), or None
            for a single process; see ``revmed.engine.distributed``.
    """

    def __init__(self, preset: Preset, data_dir: str | Path, run_dir: str | Path,
                 device: torch.device, resume: bool = False,
                 job: Distributed | None = None, overwrite: bool = False) -> None:
        self.preset, self.train, self.job = preset, preset.train, job
        self.is_main = job is None or job.is_main
        self.device = _join(job, device, self.train.batch_size)
        self.run = RunFolder(run_dir, writes=self.is_main)
        self._requested: Callable[[], int] = lambda: 0
        try:
            self._set_up(preset, data_dir, resume, overwrite)
        except BaseException:
            self.run.abandon()
            raise

    def _set_up(self, preset: Preset, data_dir: str | Path, resume: bool,
                overwrite: bool) -> None:
        """Check the data kind and the run folder, load the data, build the networks, and
        start or restore the run (``__init__``; the folder's lock is held from here on)."""
        _check_data_kind(data_dir, preset)
        # zscore-dataset: the statistics become preset values, saved with the run
        preset = self.preset = with_dataset_statistics(preset, data_dir)
        source = data_source(data_dir)
        saved = _on_every_process(self.job, lambda: self.run.check(preset, resume, source,
                                                                   overwrite))
        torch.manual_seed(self.train.seed)
        np.random.seed(self.train.seed % 2**32)
        self.patches = TrainingPatches(data_dir, preset)
        labels = check_regions(preset, self.patches)
        self.training = TrainingStep(preset, self.device, self.job, labels=labels)
        self.card = ModelCard.of(preset, tuple(self.patches.channels), self.patches.labels)
        self.validate = Validator(self.patches.dataset_root, preset, self.device, labels)
        self.epoch, self.best_score = 0, -float("inf")
        # Where in the current epoch the run stands (not 0 after resuming an interrupted one).
        self.step_in_epoch, self._epoch_sums, self._epoch_seconds = 0, {}, 0.0
        self.data_source, self.last_record = source, {}
        if saved is None:
            self.run.begin(preset, overwrite)
        else:
            self._restore(saved)
        self.run.tidy(self.epoch)
        #: ``(epoch, step_in_epoch)`` of the state in ``last.pt`` (None: no last.pt yet).
        self._saved_at = (self.epoch, self.step_in_epoch) if resume else None

    @property
    def model(self) -> torch.nn.Module:
        """The network being trained."""
        return self.training.model

    @property
    def epochs(self) -> int:
        return self.train.total_epochs

    def fit(self, progress: Callable[[TrainEvent], None] | None = None,
            time_limit: float | None = None) -> dict[str, Any]:
        """Train until the last epoch (or ``time_limit`` seconds, counted from this call; the
        epoch under way then ends early and counts as done); returns the last epoch's log.

        Raises ``TrainingInterrupted`` after saving ``last.pt`` on Ctrl-C, SIGTERM or SIGUSR1,
        or when ``progress`` raises ``KeyboardInterrupt`` (see the module doc). A run that has
        trained all its epochs already returns the record of its last one.
        """
        limit = self.train.time_limit if time_limit is None else time_limit
        deadline = time.monotonic() + limit if limit else math.inf
        record: dict[str, Any] = dict(self.last_record)
        if self.is_main:
            self.run.lock.acquire()
        try:
            with deferred_signals() as requested:
                self._requested = requested
                while self.epoch < self.epochs:
                    record, stopped = self._fit_epoch(progress, requested, deadline)
                    if stopped:
                        break
        finally:
            self._requested = lambda: 0
            self.run.release()
        if self.job is not None:
            weights = [*self.model.parameters(),
                       *(p for c in self.training.critics.values() for p in c.parameters())]
            record = {**record, "processes": self.job.world_size,
                      "rank_weight_spread": self.job.spread(weights)}
        return record

    def _fit_epoch(self, progress, requested, deadline: float):
        """One epoch (or the rest of one); returns its record and whether the time is up."""
        if requested():  # Ctrl-C during the previous epoch's validation or save
            self._stop()
        epoch_start = time.monotonic() - self._epoch_seconds
        patches = self.patches.epoch_patches(self.epoch)
        steps = batch_count(patches, self.train.batch_size)
        if self.step_in_epoch > steps:  # only a resumed last.pt can say so
            raise CheckpointError(f"{self.run.last}: records step {self.step_in_epoch} of epoch "
                                  f"{self.epoch + 1}, which has {steps} steps; the file was "
                                  "altered or damaged")
        last_batch, stopped = self._run_steps(patches, steps, progress, requested, deadline,
                                              epoch_start)
        done, sums = self.step_in_epoch, self._epoch_sums
        self.step_in_epoch, self._epoch_sums, self._epoch_seconds = 0, {}, 0.0
        self.training.end_epoch()
        self.training.calibrate(patches, self.epoch)
        self.epoch += 1
        record = {"epoch": self.epoch, "steps": done,
                  **{k: v / max(done, 1) for k, v in sums.items()},
                  **({"core_recon_error": self.training.core_reconstruction_error(
                      last_batch["X"][:1])}
                     if last_batch is not None and self.is_main else {}),
                  **(self.validate(self.model, self.training.norm_statistics) if self.is_main
                     else {}),
                  "lr": self.training.lr, "seconds": round(time.monotonic() - epoch_start, 3)}
        if self.is_main:
            self._end_epoch(record)
        if progress is not None:
            try:
                progress(TrainEvent("epoch", self.epoch, self.epochs, done, steps, record))
            except KeyboardInterrupt:  # last.pt holds this very state
                self._stop()
        if stopped:
            record["stopped_at_time_limit"] = True
        return record, stopped

    def _run_steps(self, patches, steps: int, progress, requested, deadline: float,
                   epoch_start: float):
        """The epoch's remaining steps; returns the last batch and whether the time is up.
        ``step_in_epoch`` and the loss sums follow every completed step."""
        self.model.train()
        last_batch, safe = None, True  # safe: `step_in_epoch` steps taken, losses summed
        batches = epoch_batches(patches, self.patches.kind, self.train.batch_size,
                                self.train.seed, self.epoch, self.device,
                                skip=self.step_in_epoch)
        try:
            for step, batch in enumerate(batches, start=self.step_in_epoch + 1):
                if self._agree(bool(requested()))[0]:
                    raise KeyboardInterrupt
                safe = False
                last_batch = batch if self.job is None else self.job.shard(batch)
                logs = self.training.step(last_batch)
                if not all(math.isfinite(v) for v in logs.values()):
                    self._diverged(logs, step)
                sums = self._epoch_sums
                self._epoch_sums = {k: sums.get(k, 0.0) + logs.get(k, 0.0)
                                    for k in {**sums, **logs}}
                self.step_in_epoch, safe = step, True
                if progress is not None:
                    progress(TrainEvent("step", self.epoch + 1, self.epochs, step, steps, logs))
                interrupt, time_up = self._agree(bool(requested()),
                                                 time.monotonic() > deadline)
                if interrupt:
                    raise KeyboardInterrupt
                if time_up:
                    return last_batch, True
        except KeyboardInterrupt:
            if not safe:  # a second Ctrl-C inside a step: the state may be half-updated
                raise
            self._epoch_seconds = time.monotonic() - epoch_start
            self._stop()
        return last_batch, False

    def _diverged(self, logs: dict[str, float], step: int) -> NoReturn:
        """Raise ``TrainingDiverged`` for the non-finite ``logs`` of ``step`` (the processes of
        a job all see the same averaged losses, so they all stop here)."""
        bad = ", ".join(f"{k} = {v}" for k, v in logs.items() if not math.isfinite(v))
        precision = self.train.precision
        self.run.log(f"diverged in epoch {self.epoch + 1} at step {step}: {bad}")
        hint = "" if precision == "fp32" else f" or fp32 (train.precision is {precision})"
        raise TrainingDiverged(
            f"{self.run.path}: training diverged at epoch {self.epoch + 1} step {step}: {bad}; "
            f"{self._kept()}; try a lower train.lr{hint}",
            fix=None if precision == "fp32" else "precision")

    def _kept(self) -> str:
        """What ``last.pt`` holds now, for messages."""
        last = self.run.last
        if self._saved_at is None:
            return "nothing was saved yet"
        if self._saved_at[1] == 0:
            return f"{last} keeps the state after epoch {self._saved_at[0]}"
        return f"{last} keeps epoch {self._saved_at[0] + 1} up to step {self._saved_at[1]}"

    def _agree(self, *flags: bool) -> list[bool]:
        """``flags`` OR-ed over the processes of a job (as they are for a single process)."""
        return list(flags) if self.job is None else self.job.any(*flags)

    # --- checkpoints -----------------------------------------------------------------------

    def _checkpoint(self, record: dict[str, Any]) -> Checkpoint:
        state = {**self.training.state_dict(), "torch_rng": torch.get_rng_state(),
                 "best_score": self.best_score, "epoch_sums": dict(self._epoch_sums),
                 "epoch_seconds": self._epoch_seconds}
        return Checkpoint(self.card, self.preset, state, self.epoch, self.step_in_epoch, record,
                          self.data_source)

    def _save(self, write: Callable[[], None]) -> None:
        """``write()`` a checkpoint; a write that fails (a full disk) says what is kept."""
        try:
            write()
        except OutputError as exc:
            if self.run.last_written is not None:  # last.pt was written before what failed
                self._saved_at = self.run.last_written
            raise OutputError(f"{exc}; {self._kept()}") from None

    def _end_epoch(self, record: dict[str, Any]) -> None:
        score = record.get(self.validate.score_key)
        improved = score is None or score > self.best_score
        if score is not None and improved:
            self.best_score = score
        self._save(lambda: self.run.end_epoch(record, self._checkpoint(record), best=improved))
        self._saved_at = (self.epoch, 0)

    def _stop(self) -> NoReturn:
        """Save last.pt where the run stands (in the middle of an epoch, or at its start) unless
        it holds this very state already, then raise ``TrainingInterrupted``."""
        if self.is_main and self._saved_at != (self.epoch, self.step_in_epoch):
            record = {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                      "interrupted": True}
            self._save(lambda: self.run.save_last(self._checkpoint(record)))
            self._saved_at = (self.epoch, self.step_in_epoch)
        raise TrainingInterrupted(self.run.last, self.epoch + 1, self.step_in_epoch,
                                  self._requested() or signal.SIGINT) from None

    def _restore(self, saved: Checkpoint) -> None:
        state = saved.state
        try:
            self.training.load_state_dict(state)
            torch.set_rng_state(state["torch_rng"])
            self.best_score = float(state["best_score"])
            self._epoch_sums = {str(k): float(v) for k, v in state.get("epoch_sums", {}).items()}
            self._epoch_seconds = float(state.get("epoch_seconds", 0.0))
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise CheckpointError(f"{self.run.last}: its training state does not fit this run "
                                  f"({type(exc).__name__}: {reason[:200]})") from None
        self.epoch, self.step_in_epoch = saved.epoch, saved.step_in_epoch
        self.last_record = dict(saved.metrics)
        if self.epoch < self.epochs:  # a finished run asked to resume trains nothing
            self.run.log(f"resumed after epoch {self.epoch}, step {self.step_in_epoch} of the "
                         "next")
