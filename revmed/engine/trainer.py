"""The training loop: data, steps, validation, checkpoints and logs of one run.

The same loop trains the RevGAN (paired or unpaired objective, with PatchGAN critics) and the
segmentation networks (Dice + cross-entropy, no critics); the objective decides the step.

A run folder holds ``preset.toml`` (the resolved preset), ``metrics.jsonl`` (one JSON line per
epoch: losses, validation PSNR/SSIM, learning rate, seconds), ``last.pt`` (after every epoch)
and ``best.pt`` (best validation PSNR; the last epoch when there is no validation split).
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
last completed save, or no ``last.pt`` before the first one. Each epoch end appends the
``metrics.jsonl`` line, then writes ``best.pt``, then ``last.pt``; on start the trainer drops
``metrics.jsonl`` lines beyond the checkpoint's epoch and stale temporary files of the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from revmed import config
from revmed.atomic import atomic_path
from revmed.data.samples import SampleSpec, load_sample
from revmed.data.training_patches import TrainingPatches, validation_cases
from revmed.engine.checkpoint import load_checkpoint, save_checkpoint
from revmed.engine.distributed import Distributed
from revmed.engine.step import TrainingStep
from revmed.errors import ConfigError, InputError, OutputError, RevmedError
from revmed.inference import sliding_window_predict
from revmed.metrics import dice, psnr, ssim3d
from revmed.nn import invertibility_error
from revmed.segmentation import REGIONS, labels_to_regions

#: The data range of images inside the network ([-1, 1]), for validation PSNR and SSIM.
NETWORK_RANGE = 2.0
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


def linear_decay(epochs: int, epochs_decay: int) -> Callable[[int], float]:
    """Learning-rate factor: 1 for ``epochs`` epochs, then linearly down to 0 over the decay."""
    def factor(epoch: int) -> float:
        if epoch < epochs or epochs_decay == 0:
            return 1.0
        return max(0.0, 1.0 - (epoch - epochs + 1) / (epochs_decay + 1))
    return factor


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name}: {exc}") from None


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _batches(patches: dict[str, np.ndarray], kind: str, batch_size: int, seed: int,
             epoch: int, device: torch.device, skip: int = 0):
    """Shuffled batches; paired keys move together, unpaired X and Y are shuffled apart.

    Segmentation batches (``X`` and ``label``) are flipped along each spatial axis with
    probability 1/2 per patch. ``skip`` leaves out the first batches (of a resumed epoch) and
    yields the rest exactly as without it.
    """
    generator = torch.Generator().manual_seed(seed * 7919 + epoch)
    keys = ("X", "label") if kind == "segmentation" else ("X", "Y")
    if kind == "unpaired":
        n = max(len(patches["X"]), len(patches["Y"]))
        order = {k: torch.randperm(len(patches[k]), generator=generator) for k in ("X", "Y")}
        index = {k: [int(order[k][i % len(order[k])]) for i in range(n)] for k in order}
    else:
        n = len(patches["X"])
        perm = [int(i) for i in torch.randperm(n, generator=generator)]
        index = {k: perm for k in patches}
    for number, start in enumerate(range(0, n - batch_size + 1 if n >= batch_size else 1,
                                         batch_size)):
        if number < skip:
            if kind == "segmentation":  # draw this batch's flips all the same
                torch.rand(len(index["X"][start:start + batch_size]), 3, generator=generator)
            continue
        batch = {k: torch.from_numpy(patches[k][index[k][start:start + batch_size]])
                 for k in keys}
        if kind == "segmentation":
            flips = torch.rand(len(batch["X"]), 3, generator=generator) < 0.5
            for i, axes in enumerate(flips):
                dims = [d for d, flip in zip((1, 2, 3), axes.tolist()) if flip]
                if dims:
                    for k in keys:
                        batch[k][i] = torch.flip(batch[k][i], dims)
        yield {k: v.to(device) for k, v in batch.items()}


#: Preset keys a resumed run may change: how long it trains, and what does not shape training.
RESUMABLE_KEYS = ("name", "base", "description", "data_dir", "synth", "train.epochs",
                  "train.epochs_decay", "train.time_limit", "train.compile",
                  "train.channels_last", "infer.")


def _flatten(preset: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in preset.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_same_run(saved: dict[str, Any], preset: dict[str, Any], last: Path) -> None:
    """Raise ``ConfigError`` when ``preset`` would train a different run than the one saved
    in ``last``: another model, data mapping, patch sampling or optimisation."""
    old, new = _flatten(saved), _flatten(preset)
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUMABLE_KEYS) or old.get(key) == new.get(key):
            continue
        raise ConfigError(f"{last}: the run was trained with {key} = {old.get(key)!r}, not "
                          f"{new.get(key)!r}; resume with the same preset and --set values "
                          f"(see {last.parent / 'preset.toml'})")


class Trainer:
    """Trains the model a preset describes; see the module doc for the run folder.

    Args:
        preset: a resolved preset (``revmed.config.load_preset``).
        data_dir: a dataset folder or a ``revmed patchify`` folder.
        run_dir: the run folder (made if missing).
        device: a torch device (with ``job``, its type: each process takes its own GPU).
        resume: continue from ``run_dir/last.pt``.
        job: this process's place in a ``torchrun`` job (``Distributed.from_env()``), or None
            for a single process; see ``revmed.engine.distributed``.
    """

    def __init__(self, preset: dict[str, Any], data_dir: str | Path, run_dir: str | Path,
                 device: torch.device, resume: bool = False,
                 job: Distributed | None = None) -> None:
        self.segmentation = preset["train"]["objective"] == "segmentation"
        if not self.segmentation and preset["data"]["intensity"] != "window":
            raise ConfigError(f"preset {preset['name']}: key 'data.intensity': RevGAN needs a "
                              "fixed 'window' so outputs map back to the input's units")
        self.job = job
        self.is_main = job is None or job.is_main
        if job is not None:
            device = job.device_for(device)
            if preset["train"]["batch_size"] % job.world_size:
                raise ConfigError(f"train.batch_size {preset['train']['batch_size']} must be a "
                                  f"multiple of the {job.world_size} processes: each takes an "
                                  "equal slice of every batch")
            job.join(device)
        self.preset, self.device = preset, device
        self.run_dir = Path(run_dir)
        self.train_cfg = preset["train"]
        last = self.run_dir / "last.pt"
        if resume and not last.is_file():
            raise InputError(f"{last}: nothing to resume (no last.pt in the run folder)")
        if not resume and last.exists():
            raise OutputError(f"{self.run_dir}: holds a run already; use --resume to continue "
                              "it or choose another --out")
        _seed_everything(self.train_cfg["seed"])
        self.patches = TrainingPatches(data_dir, preset)
        self._check_kind(self.patches.kind)
        self.training = TrainingStep(preset, device, job)
        # the parts, by their names (checkpoints, validation and tests use them)
        self.model_kind, self.model_kwargs = self.training.model_kind, self.training.model_kwargs
        self.model, self.critics = self.training.model, self.training.critics
        self.objective, self.use_gan = self.training.objective, self.training.use_gan
        self.opt_g, self.opt_d, self.scaler = (self.training.opt_g, self.training.opt_d,
                                               self.training.scaler)
        decay = linear_decay(self.train_cfg["epochs"], self.train_cfg["epochs_decay"])
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, decay)
        self.sched_d = (torch.optim.lr_scheduler.LambdaLR(self.opt_d, decay)
                        if self.opt_d else None)
        self.score_key = "val_dice" if self.segmentation else "val_psnr"
        self.epoch, self.best_score = 0, -float("inf")
        # Where in the current epoch the run stands (not 0 after resuming an interrupted one).
        self.step_in_epoch, self._epoch_sums, self._epoch_seconds = 0, {}, 0.0
        self.val_kind, self.val_cases = validation_cases(self.patches.dataset_root)
        self._val_samples: list[dict[str, np.ndarray]] | None = None
        if resume:
            checkpoint = load_checkpoint(last, kind=self.model_kind)
            _check_same_run(checkpoint["preset"], preset, last)
            self._restore(checkpoint)
        elif self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.run_dir / "preset.toml") as tmp:
                tmp.write_text(config.to_toml(preset))
        if self.is_main:
            self._tidy_run_dir()
        #: ``(epoch, step_in_epoch)`` of the state in ``last.pt`` (None: no last.pt yet).
        self._saved_at = (self.epoch, self.step_in_epoch) if resume else None

    @property
    def epochs(self) -> int:
        return self.train_cfg["epochs"] + self.train_cfg["epochs_decay"]

    def _check_kind(self, kind: str) -> None:
        objective = self.train_cfg["objective"]
        if kind not in OBJECTIVE_DATA[objective]:
            raise InputError(f"a {kind} dataset cannot train the {objective} objective of "
                             f"preset {self.preset['name']}")

    # --- one run ---------------------------------------------------------------------------

    def fit(self, progress: Callable[[TrainEvent], None] | None = None,
            time_limit: float | None = None) -> dict[str, Any]:
        """Train until the last epoch (or ``time_limit`` seconds, counted from this call; the
        epoch under way then ends early and counts as done); returns the last epoch's log.

        Raises ``TrainingInterrupted`` after saving ``last.pt`` on Ctrl-C or when ``progress``
        raises ``KeyboardInterrupt`` (see the module doc).
        """
        limit = self.train_cfg["time_limit"] if time_limit is None else time_limit
        start = time.monotonic()
        record: dict[str, Any] = {}
        with _deferred_sigint() as requested:
            while self.epoch < self.epochs:
                record, stopped = self._fit_epoch(progress, requested, start, limit)
                if stopped:
                    break
        if self.job is not None:
            weights = [*self.model.parameters(),
                       *(p for c in self.critics.values() for p in c.parameters())]
            record = {**record, "processes": self.job.world_size,
                      "rank_weight_spread": self.job.spread(weights)}
        return record

    def _fit_epoch(self, progress, requested, start: float, limit: float):
        """One epoch (or the rest of one); returns its record and whether the time is up."""
        if requested():  # Ctrl-C during the previous epoch's validation or save
            self._stop()
        epoch_start = time.monotonic() - self._epoch_seconds
        patches = self.patches.epoch_patches(self.epoch)
        steps = max(1, len(patches["X"]) // self.train_cfg["batch_size"])
        done, sums = self.step_in_epoch, dict(self._epoch_sums)
        stopped, last_batch = False, None
        safe = True  # the state is "`done` steps of this epoch taken, their losses in `sums`"
        self.model.train()
        try:
            for step, batch in enumerate(_batches(patches, self.patches.kind,
                                                  self.train_cfg["batch_size"],
                                                  self.train_cfg["seed"], self.epoch,
                                                  self.device, skip=done), start=done + 1):
                if self._agree(requested())[0]:
                    raise KeyboardInterrupt
                safe = False
                last_batch = batch if self.job is None else self.job.shard(batch)
                logs = self.training.step(last_batch)
                if not all(math.isfinite(v) for v in logs.values()):
                    self._diverged(logs, step)
                for key, value in logs.items():
                    sums[key] = sums.get(key, 0.0) + value
                done = step
                safe = True
                if progress is not None:
                    progress(TrainEvent("step", self.epoch + 1, self.epochs, step, steps, logs))
                interrupt, time_up = self._agree(
                    requested(), bool(limit) and time.monotonic() - start > limit)
                if interrupt:
                    raise KeyboardInterrupt
                if time_up:
                    stopped = True
                    break
        except KeyboardInterrupt:
            if not safe:  # a second Ctrl-C inside a step: the state may be half-updated
                raise
            self.step_in_epoch, self._epoch_sums = done, sums
            self._epoch_seconds = time.monotonic() - epoch_start
            self._stop()
        step = done
        self.step_in_epoch, self._epoch_sums, self._epoch_seconds = 0, {}, 0.0
        with warnings.catch_warnings():
            # fp16's gradient scaler may have skipped every optimiser step of an epoch while it
            # finds its scale; PyTorch then warns that the schedule steps first. The epoch ran
            # at its own rate all the same, and the schedule counts epochs, not steps.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler")
            self.sched_g.step()
            if self.sched_d is not None:
                self.sched_d.step()
        self.epoch += 1
        record = {"epoch": self.epoch, "steps": step,
                  **{k: v / max(step, 1) for k, v in sums.items()},
                  **({"core_recon_error": self.core_reconstruction_error(last_batch["X"][:1])}
                     if last_batch is not None and self.is_main else {}),
                  **(self.validate() if self.is_main else {}),
                  "lr": self.opt_g.param_groups[0]["lr"],
                  "seconds": round(time.monotonic() - epoch_start, 3)}
        if self.is_main:
            self._save(record)
        if progress is not None:
            try:
                progress(TrainEvent("epoch", self.epoch, self.epochs, step, steps, record))
            except KeyboardInterrupt:  # last.pt holds this very state
                self._stop()
        if stopped:
            record["stopped_at_time_limit"] = True
        return record, stopped

    def _diverged(self, logs: dict[str, float], step: int) -> NoReturn:
        """Raise ``TrainingDiverged`` for the non-finite ``logs`` of ``step`` (the processes of
        a job all see the same averaged losses, so they all stop here)."""
        bad = ", ".join(f"{k} = {v}" for k, v in logs.items() if not math.isfinite(v))
        last = self.run_dir / "last.pt"
        if self._saved_at is None:
            kept = "nothing was saved yet"
        elif self._saved_at[1] == 0:
            kept = f"{last} keeps the state after epoch {self._saved_at[0]}"
        else:
            kept = f"{last} keeps epoch {self._saved_at[0] + 1} up to step {self._saved_at[1]}"
        precision = self.train_cfg["precision"]
        hint = "" if precision == "fp32" else f" or --precision fp32 (it was {precision})"
        raise TrainingDiverged(
            f"{self.run_dir}: training diverged at epoch {self.epoch + 1} step {step}: {bad}; "
            f"{kept}; try a lower train.lr{hint}")

    def _agree(self, *flags: bool) -> list[bool]:
        """``flags`` OR-ed over the processes of a job (as they are for a single process)."""
        return list(flags) if self.job is None else self.job.any(*flags)

    def core_reconstruction_error(self, x: torch.Tensor) -> float:
        """``max |C^-1(C(h)) - h|`` of the invertible core on the features ``h`` of the input
        batch ``x``, under the training precision: how exact the memory-free backward's
        rebuilt activations are."""
        with torch.no_grad(), self.training.autocast():
            return invertibility_error(self.model.core, self.model.core_input(x))

    def validate(self) -> dict[str, float]:
        """Scores on the validation volumes: mean PSNR and SSIM of F in the network's [-1, 1]
        range, or, for segmentation, the Dice of each region and their mean."""
        wanted = ("segmentation",) if self.segmentation else ("paired", "hr-only")
        if not self.val_cases or self.val_kind not in wanted:
            return {}
        if self._val_samples is None:
            spec = SampleSpec.from_preset(self.preset)
            self._val_samples = [load_sample(c, self.val_kind, spec) for c in self.val_cases]
        self.model.eval()
        scores: dict[str, list[float]] = {}
        infer = self.preset["infer"]
        for sample in self._val_samples:
            pred = sliding_window_predict(self.model, sample["X"], self.preset["patch"]["size"],
                                          infer["overlap"], infer["sw_batch_size"], self.device,
                                          infer["blend"],
                                          precision=self.train_cfg["precision"],
                                          channels_last=self.train_cfg["channels_last"])
            if self.segmentation:
                found = pred > 0.0  # sigmoid(logit) > 1/2
                truth = labels_to_regions(sample["label"]) > 0.5
                for name, p, r in zip(REGIONS, found, truth):
                    scores.setdefault(f"val_dice_{name}", []).append(dice(p, r))
            else:
                pred = np.clip(pred, -1.0, 1.0)
                scores.setdefault("val_psnr", []).append(psnr(pred, sample["Y"], NETWORK_RANGE))
                scores.setdefault("val_ssim", []).append(ssim3d(pred, sample["Y"],
                                                                NETWORK_RANGE))
        self.model.train()
        result = {k: float(np.mean(v)) for k, v in scores.items()}
        if self.segmentation:
            result["val_dice"] = float(np.mean([result[f"val_dice_{r}"] for r in REGIONS]))
        return result

    # --- checkpoints -----------------------------------------------------------------------

    def _payload(self, record: dict[str, Any]) -> dict[str, Any]:
        data = self.preset["data"]
        state = {
            "generator": self.model.state_dict(),
            "critics": {k: d.state_dict() for k, d in self.critics.items()},
            "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "best_score": self.best_score,
            "epoch_sums": dict(self._epoch_sums), "epoch_seconds": self._epoch_seconds,
            "scaler": self.scaler.state_dict(),
        }
        if self.opt_d is not None:
            state["opt_d"] = self.opt_d.state_dict()
            state["sched_d"] = self.sched_d.state_dict()
        if hasattr(self.objective, "pools"):
            state["pools"] = {k: list(p.items) for k, p in self.objective.pools.items()}
            state["pool_rng"] = {k: p.rng.getstate() for k, p in self.objective.pools.items()}
        return {
            "model": {"kind": self.model_kind, "kwargs": self.model_kwargs},
            "data": {**{k: data[k] for k in ("in_channels", "out_channels", "intensity",
                                             "window", "sr_factors", "sr_upsample")},
                     "channels": self.patches.channels},
            "patch_size": list(self.preset["patch"]["size"]),
            "preset": self.preset, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "metrics": record, "state": state,
        }

    def _save(self, record: dict[str, Any]) -> None:
        """End of an epoch: the metrics line, then best.pt, then last.pt (the commit point: a
        run killed before it redoes the epoch and ``_tidy_run_dir`` drops the early line)."""
        score = record.get(self.score_key)
        improved = score is None or score > self.best_score
        if score is not None and improved:
            self.best_score = score
        payload = self._payload(record)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        if improved:
            save_checkpoint(self.run_dir / "best.pt", payload)
        save_checkpoint(self.run_dir / "last.pt", payload)
        self._saved_at = (self.epoch, 0)

    def _stop(self) -> NoReturn:
        """Save last.pt where the run stands (in the middle of an epoch, or at its start) unless
        it holds this very state already, then raise ``TrainingInterrupted``."""
        if self.is_main and self._saved_at != (self.epoch, self.step_in_epoch):
            record = {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                      "interrupted": True}
            save_checkpoint(self.run_dir / "last.pt", self._payload(record))
            self._saved_at = (self.epoch, self.step_in_epoch)
        raise TrainingInterrupted(self.run_dir / "last.pt", self.epoch + 1,
                                  self.step_in_epoch) from None

    def _tidy_run_dir(self) -> None:
        """Remove what a killed run may leave: temporary files of its checkpoints and logs,
        and ``metrics.jsonl`` lines (or a torn last line) beyond the epoch being continued."""
        for name in ("last.pt", "best.pt", "preset.toml", "metrics.jsonl"):
            for stale in self.run_dir.glob(f".{name}.tmp-*"):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        log = self.run_dir / "metrics.jsonl"
        if not log.is_file():
            return
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if line.endswith("\n") and isinstance(entry, dict) and \
                    entry.get("epoch", 0) <= self.epoch:
                keep.append(line)
        if keep != lines:
            with atomic_path(log) as tmp:
                tmp.write_text("".join(keep), encoding="utf-8")

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state"]
        self.model.load_state_dict(state["generator"])
        for key, critic in self.critics.items():
            critic.load_state_dict(state["critics"][key])
        self.opt_g.load_state_dict(state["opt_g"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.sched_g.load_state_dict(state["sched_g"])
        if self.opt_d is not None and "opt_d" in state:
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        if "pools" in state and hasattr(self.objective, "pools"):
            for key, items in state["pools"].items():
                self.objective.pools[key].items = [t.to(self.device) for t in items]
            for key, rng in state.get("pool_rng", {}).items():
                self.objective.pools[key].rng.setstate(rng)
        torch.set_rng_state(state["torch_rng"])
        self.best_score = state["best_score"]
        self.epoch = checkpoint["epoch"]
        self.step_in_epoch = int(checkpoint.get("step_in_epoch", 0))
        self._epoch_sums = dict(state.get("epoch_sums", {}))
        self._epoch_seconds = float(state.get("epoch_seconds", 0.0))
