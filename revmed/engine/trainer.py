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
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from revmed.checkpoint import Checkpoint, ModelCard
from revmed.data.batches import batch_count, epoch_batches
from revmed.data.training_patches import TrainingPatches
from revmed.engine.distributed import Distributed
from revmed.engine.run_folder import RunFolder
from revmed.engine.step import TrainingStep
from revmed.engine.validation import Validator
from revmed.errors import ConfigError, InputError, RevmedError
from revmed.nn import invertibility_error
from revmed.preset import Preset

#: Dataset kinds each objective can train on.
OBJECTIVE_DATA = {"paired": ("paired", "hr-only"), "unpaired": ("unpaired", "paired", "hr-only"),
                  "segmentation": ("segmentation",)}


class TrainingInterrupted(KeyboardInterrupt):
    """``Trainer.fit`` stopped on Ctrl-C (or a ``KeyboardInterrupt`` from ``progress``) and
    saved ``checkpoint`` (``RUN/last.pt``); ``resume=True`` continues from there.

    ``epoch`` is the epoch in progress (1-based, as in ``TrainEvent``) and ``step`` the steps of
    it already done (0: none; the epochs before it are complete).
    """

    def __init__(self, checkpoint: Path, epoch: int, step: int) -> None:
        super().__init__(f"training interrupted: saved {checkpoint} at epoch {epoch} step {step}")
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step


class TrainingDiverged(RevmedError):
    """A training step gave a NaN or infinite loss. The state after it is not saved; the run
    folder keeps its last checkpoint, whose losses were finite."""


@contextlib.contextmanager
def _deferred_sigint():
    """Yield ``requested()``: True once Ctrl-C was pressed; a second Ctrl-C raises at once.

    Only the main thread receives signals, and an application's own SIGINT handler is left in
    place; in both cases ``requested()`` stays False and a ``KeyboardInterrupt`` raised by that
    handler is caught where it lands (see ``Trainer.fit``).
    """
    pressed = [False]

    def handler(signum, frame):
        if pressed[0]:
            raise KeyboardInterrupt
        pressed[0] = True

    install = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if install:
        signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: pressed[0]
    finally:
        if install:
            signal.signal(signal.SIGINT, signal.default_int_handler)


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
                 job: Distributed | None = None) -> None:
        self.preset, self.train, self.job = preset, preset.train, job
        self.is_main = job is None or job.is_main
        self.device = _join(job, device, self.train.batch_size)
        self.run = RunFolder(run_dir, writes=self.is_main)
        saved = self.run.check(preset, resume)
        torch.manual_seed(self.train.seed)
        np.random.seed(self.train.seed % 2**32)
        self.patches = TrainingPatches(data_dir, preset)
        if self.patches.kind not in OBJECTIVE_DATA[self.train.objective]:
            raise InputError(f"a {self.patches.kind} dataset cannot train the "
                             f"{self.train.objective} objective of preset {preset.name}")
        self.training = TrainingStep(preset, self.device, job)
        self.card = ModelCard.of(preset, tuple(self.patches.channels))
        self.validate = Validator(self.patches.dataset_root, preset, self.device)
        self.epoch, self.best_score = 0, -float("inf")
        # Where in the current epoch the run stands (not 0 after resuming an interrupted one).
        self.step_in_epoch, self._epoch_sums, self._epoch_seconds = 0, {}, 0.0
        if saved is None:
            self.run.begin(preset)
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

        Raises ``TrainingInterrupted`` after saving ``last.pt`` on Ctrl-C or when ``progress``
        raises ``KeyboardInterrupt`` (see the module doc).
        """
        limit = self.train.time_limit if time_limit is None else time_limit
        deadline = time.monotonic() + limit if limit else math.inf
        record: dict[str, Any] = {}
        with _deferred_sigint() as requested:
            while self.epoch < self.epochs:
                record, stopped = self._fit_epoch(progress, requested, deadline)
                if stopped:
                    break
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
        last_batch, stopped = self._run_steps(patches, steps, progress, requested, deadline,
                                              epoch_start)
        done, sums = self.step_in_epoch, self._epoch_sums
        self.step_in_epoch, self._epoch_sums, self._epoch_seconds = 0, {}, 0.0
        self.training.end_epoch()
        self.epoch += 1
        record = {"epoch": self.epoch, "steps": done,
                  **{k: v / max(done, 1) for k, v in sums.items()},
                  **({"core_recon_error": self.core_reconstruction_error(last_batch["X"][:1])}
                     if last_batch is not None and self.is_main else {}),
                  **(self.validate(self.model) if self.is_main else {}),
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
                if self._agree(requested())[0]:
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
                interrupt, time_up = self._agree(requested(), time.monotonic() > deadline)
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
        last = self.run.last
        if self._saved_at is None:
            kept = "nothing was saved yet"
        elif self._saved_at[1] == 0:
            kept = f"{last} keeps the state after epoch {self._saved_at[0]}"
        else:
            kept = f"{last} keeps epoch {self._saved_at[0] + 1} up to step {self._saved_at[1]}"
        precision = self.train.precision
        hint = "" if precision == "fp32" else f" or fp32 (train.precision is {precision})"
        raise TrainingDiverged(
            f"{self.run.path}: training diverged at epoch {self.epoch + 1} step {step}: {bad}; "
            f"{kept}; try a lower train.lr{hint}", fix=None if precision == "fp32" else "precision")

    def _agree(self, *flags: bool) -> list[bool]:
        """``flags`` OR-ed over the processes of a job (as they are for a single process)."""
        return list(flags) if self.job is None else self.job.any(*flags)

    def core_reconstruction_error(self, x: torch.Tensor) -> float:
        """``max |C^-1(C(h)) - h|`` of the invertible core on the features ``h`` of the input
        batch ``x``, under the training precision: how exact the memory-free backward's
        rebuilt activations are."""
        with torch.no_grad(), self.training.autocast():
            return invertibility_error(self.model.core, self.model.core_input(x))

    # --- checkpoints -----------------------------------------------------------------------

    def _checkpoint(self, record: dict[str, Any]) -> Checkpoint:
        state = {**self.training.state_dict(), "torch_rng": torch.get_rng_state(),
                 "best_score": self.best_score, "epoch_sums": dict(self._epoch_sums),
                 "epoch_seconds": self._epoch_seconds}
        return Checkpoint(self.card, self.preset, state, self.epoch, self.step_in_epoch, record)

    def _end_epoch(self, record: dict[str, Any]) -> None:
        score = record.get(self.validate.score_key)
        improved = score is None or score > self.best_score
        if score is not None and improved:
            self.best_score = score
        self.run.end_epoch(record, self._checkpoint(record), best=improved)
        self._saved_at = (self.epoch, 0)

    def _stop(self) -> NoReturn:
        """Save last.pt where the run stands (in the middle of an epoch, or at its start) unless
        it holds this very state already, then raise ``TrainingInterrupted``."""
        if self.is_main and self._saved_at != (self.epoch, self.step_in_epoch):
            record = {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                      "interrupted": True}
            self.run.save_last(self._checkpoint(record))
            self._saved_at = (self.epoch, self.step_in_epoch)
        raise TrainingInterrupted(self.run.last, self.epoch + 1, self.step_in_epoch) from None

    def _restore(self, saved: Checkpoint) -> None:
        state = saved.state
        self.training.load_state_dict(state)
        torch.set_rng_state(state["torch_rng"])
        self.best_score = state["best_score"]
        self.epoch, self.step_in_epoch = saved.epoch, saved.step_in_epoch
        self._epoch_sums = dict(state.get("epoch_sums", {}))
        self._epoch_seconds = float(state.get("epoch_seconds", 0.0))
