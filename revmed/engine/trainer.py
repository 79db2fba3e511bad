"""The training loop of one run: epochs of steps, validation, checkpoints, interruptions.

``revmed.engine.setup.setup_training`` assembles a run and hands its parts to ``Trainer``,
which runs the loop and never reads a preset or a data folder. The same loop trains the RevGAN
(paired or unpaired objective, with PatchGAN critics) and the segmentation networks (Dice +
cross-entropy, no critics); ``TrainingStep`` decides the step,
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

Time limits. With ``train.time_limit`` and a learning-rate decay (``train.epochs_decay``), the
schedule runs on whichever is further along, the epochs or the time: when a fraction f of the
limit has passed, the rate is at least as far down as it is in epoch ``floor(f * epochs)``. On a
slow or loaded machine the decay therefore starts and ends within the limit (the last epochs
before the deadline run at a low rate) instead of being cut off before it began. A run that
finishes its epochs within the limit is unchanged; one that must repeat exactly whatever the
load sets ``train.time_limit = 0``.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch

from revmed.checkpoint import Checkpoint
from revmed.data.batches import batch_count, epoch_batches
from revmed.data.training_patches import TrainingPatches
from revmed.engine.distributed import Distributed
from revmed.engine.run_folder import RunFolder, RunRecord
from revmed.engine.signals import TrainingInterrupted, deferred_signals
from revmed.engine.step import TrainingStep, linear_decay
from revmed.engine.validation import Validator
from revmed.errors import CheckpointError, OutputError, RevmedError
from revmed.preset import TrainSection


class TrainingDiverged(RevmedError):
    """A training step gave a NaN or infinite loss. The state after it is not saved; the run
    folder keeps its last checkpoint, whose losses were finite."""


@dataclass
class TrainEvent:
    """What the loop reports after each step (``event="step"``) and epoch (``"epoch"``)."""

    event: str
    epoch: int
    epochs: int
    step: int = 0
    steps: int = 0
    logs: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Runs the training loop of one run, assembled by ``revmed.engine.setup.setup_training``;
    see the module doc.

    Args:
        step: the networks, objective and optimisers (``TrainingStep``).
        patches: where each epoch's patches come from.
        validate: scores the network after each epoch.
        run: the run folder (checked, and begun for a new run).
        record: what the run's checkpoints record beside the state (card, preset, data).
        train: the ``[train]`` section (epochs, batch size, time limit, seed, precision).
        device: this process's device.
        job: this process's place in a ``torchrun`` job, or None.
        saved: the checkpoint of the run to resume (None: a new run).
    """

    def __init__(self, step: TrainingStep, patches: TrainingPatches, validate: Validator,
                 run: RunFolder, record: RunRecord, train: TrainSection, device: torch.device,
                 job: Distributed | None = None, saved: Checkpoint | None = None) -> None:
        self.training, self.patches, self.validate = step, patches, validate
        self.run, self.record, self.train = run, record, train
        self.device, self.job = device, job
        self.is_main = job is None or job.is_main
        self._requested: Callable[[], int] = lambda: 0
        self.epoch, self.best_score = 0, -float("inf")
        # Where in the current epoch the run stands (not 0 after resuming an interrupted one).
        self.step_in_epoch, self._epoch_sums, self._epoch_seconds = 0, {}, 0.0
        self.last_record: dict[str, Any] = {}
        # the epoch the time limit has reached (see "Time limits" in the module doc)
        self._clock = _ScheduleClock(0.0, math.inf, 0, 0)
        if saved is not None:
            self._restore(saved)
        self.run.tidy(self.epoch)
        #: ``(epoch, step_in_epoch)`` of the state in ``last.pt`` (None: no last.pt yet).
        self._saved_at = (self.epoch, self.step_in_epoch) if saved is not None else None

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
        started = time.monotonic()
        deadline = started + limit if limit else math.inf
        self._clock = _ScheduleClock(started, limit if limit and self.train.epochs_decay
                                     else math.inf, self.epoch, self.epochs)
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
        done, sums, lr = self.step_in_epoch, self._epoch_sums, self.training.lr  # its last step's
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
                  "lr": lr, "seconds": round(time.monotonic() - epoch_start, 3)}
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
                self._follow_time()
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
                now = time.monotonic()
                interrupt, time_up, later = self._agree(bool(requested()), now > deadline,
                                                        self._clock.ahead(now))
                if interrupt:
                    raise KeyboardInterrupt
                if later:  # every process of a job moves its schedule together
                    self._clock.epoch += 1
                if time_up:
                    return last_batch, True
        except KeyboardInterrupt:
            if not safe:  # a second Ctrl-C inside a step: the state may be half-updated
                raise
            self._epoch_seconds = time.monotonic() - epoch_start
            self._stop()
        return last_batch, False

    def _follow_time(self) -> None:
        """Lower the learning rate to the time limit's epoch when the time is further along
        than the epochs (the epoch schedule resets it at each epoch's end)."""
        if self._clock.epoch > self.epoch:
            decay = linear_decay(self.train.epochs, self.train.epochs_decay)
            self.training.scale_lr(decay(min(self._clock.epoch, self.epochs - 1)))

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

    def _checkpoint(self, metrics: dict[str, Any]) -> Checkpoint:
        state = {**self.training.state_dict(), "torch_rng": torch.get_rng_state(),
                 "best_score": self.best_score, "epoch_sums": dict(self._epoch_sums),
                 "epoch_seconds": self._epoch_seconds}
        return self.record.checkpoint(state, self.epoch, self.step_in_epoch, metrics)

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


@dataclass
class _ScheduleClock:
    """How far a time limit has gone, counted in epochs: the limit spans the epochs from
    ``first`` (where this call of ``fit`` began) to ``epochs``, and ``epoch`` advances by one
    (for every process of a job at once) whenever ``ahead`` finds the elapsed share of
    ``limit`` beyond it. ``limit`` is infinite when the schedule follows the epochs alone."""

    started: float
    limit: float
    first: int
    epochs: int

    def __post_init__(self) -> None:
        self.epoch = self.first

    def ahead(self, now: float) -> bool:
        """Whether the time now stands at a later epoch than ``epoch``."""
        share = (now - self.started) / self.limit
        return self.first + math.floor(share * (self.epochs - self.first)) > self.epoch
