"""One training step: the networks, objective, optimisers, schedules and how they are updated.

``TrainingStep`` is what ``Trainer`` runs each step and what ``revmed.planning`` measures, so the
two cannot drift apart (both build it with ``revmed.engine.setup.build_training_step``). Given
the generator (or segmentation network) and the critics when the objective has a GAN term, it
builds the objective, Adam and a learning-rate schedule for each, and a gradient scaler for the
precision; with ``train.channels_last`` the networks and batches are put
in channels-last order, with ``train.compile`` the networks' plain parts are compiled (both
``revmed.runtime``). Calling ``step`` on a batch takes one optimisation step; ``end_epoch``
advances the schedules; ``state_dict`` holds everything a resumed run needs of it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from revmed.engine.distributed import Distributed, LossModule, wrap
from revmed.engine.objectives import build_objective
from revmed.nn import invertibility_error
from revmed.nn.norm_statistics import Statistics, collect_norm_statistics
from revmed.preset import TrainSection
from revmed.regions import LabelSet
from revmed.runtime import as_channels_last, autocast, grad_scaler, prepare

#: Patches per direction on which ``TrainingStep.calibrate`` measures the normalisation
#: statistics after each epoch. On four of the quality benchmark's runs, 64 scored within
#: 0.015 dB of one epoch's 136, and 16 up to 0.043 dB worse
#: (benchmarks/norm_statistics.py --subsets 16,64,136, docs/benchmarks.md).
CALIBRATION_PATCHES = 64


def linear_decay(epochs: int, epochs_decay: int) -> Callable[[int], float]:
    """Learning-rate factor: 1 for ``epochs`` epochs, then linearly down to 0 over the decay."""
    def factor(epoch: int) -> float:
        if epoch < epochs or epochs_decay == 0:
            return 1.0
        return max(0.0, 1.0 - (epoch - epochs + 1) / (epochs_decay + 1))
    return factor


def _adam(params: list[nn.Parameter], train: TrainSection):
    """Adam at the ``[train]`` rate with its linearly decaying schedule, or ``(None, None)``."""
    if not params:
        return None, None
    optimiser = torch.optim.Adam(params, lr=train.lr, betas=tuple(train.betas))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, linear_decay(train.epochs, train.epochs_decay))
    return optimiser, schedule


class TrainingStep:
    """The trainable parts of a run on ``device``; ``step(batch)`` updates them once.

    Args:
        model: the generator (or segmentation network), freshly built.
        critics: the PatchGAN critics ``{"X": D_X, "Y": D_Y}`` (empty without a GAN term).
        train: the ``[train]`` section (objective, losses, optimiser, precision, seed, ...).
        device: where the networks run.
        job: a ``torchrun`` job: each step's losses then run inside DistributedDataParallel,
            and the unpaired objective's image pools are seeded per process.
        labels: the label set whose regions a segmentation network learns (its data's).
        tiles: the network runs in tiles at inference (``calibrate`` then measures its
            normalisation statistics after each epoch).

    ``revmed.engine.setup.build_training_step`` builds one from a preset.
    """

    def __init__(self, model: nn.Module, critics: dict[str, nn.Module], train: TrainSection,
                 device: torch.device, job: Distributed | None = None,
                 labels: LabelSet | None = None, tiles: bool = False) -> None:
        self.device, self.job, self.precision = device, job, train.precision
        self.channels_last = train.channels_last
        self.model = model.to(device)
        #: F's and G's normalisation statistics ({"forward": ..., "reverse": ...}) at the
        #: end of the last epoch (``calibrate``); None before one ended or for a family
        #: without tiles.
        self.norm_statistics: dict[str, Statistics] | None = None
        self.tiles = tiles
        self.seed, self.batch_size = train.seed, train.batch_size
        rank = job.rank if job is not None else 0
        self.objective = build_objective(train, seed=train.seed + 1000 * rank, labels=labels)
        self.use_gan = bool(critics)
        self.critics = critics
        for critic in self.critics.values():
            # PyTorch's CPU bf16 convolution (oneDNN, seen on 2.13) returns weight gradients of
            # order 1e14 where an output is 2 voxels deep, as the critic's last two layers are
            # at 32^3 patches; bf16 training then turns to NaN within an epoch. The critics are
            # small: they run in float32, the generator in bf16.
            critic.full_precision = device.type == "cpu" and train.precision == "bf16"
        for net in (self.model, *self.critics.values()):
            prepare(net, device, channels_last=self.channels_last, compile=train.compile)
        # each step's losses as one module call, which DDP wraps when there are several
        # processes (the model and critics themselves stay unwrapped for saving and
        # validation); the objective's methods are looked up at each call
        self._generator_loss = wrap(
            LossModule(self.model, lambda *a: self.objective.generator_step(*a), self.critics),
            device, job)
        self._critic_loss = (wrap(LossModule(nn.ModuleDict(self.critics),
                                             lambda *a: self.objective.critic_step(*a)),
                                  device, job)
                             if self.use_gan else None)
        self.scaler = grad_scaler(self.precision, device)
        self.base_lr = train.lr
        self.opt_g, self.sched_g = _adam(list(self.model.parameters()), train)
        self.opt_d, self.sched_d = _adam([p for d in self.critics.values()
                                          for p in d.parameters()], train)

    def autocast(self):
        """The autocast context of the preset's precision on this device."""
        return autocast(self.precision, self.device)

    @property
    def lr(self) -> float:
        """The generator's learning rate now."""
        return self.opt_g.param_groups[0]["lr"]

    def scale_lr(self, scale: float) -> None:
        """Set every optimiser's rate to ``scale`` times the preset's (for training loops
        that schedule by something other than epochs, e.g. selfsr's time budget)."""
        for optimiser in (self.opt_g, self.opt_d):  # no critics: no critic optimiser
            for group in (optimiser.param_groups if optimiser is not None else ()):
                group["lr"] = self.base_lr * scale

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on ``batch`` (this process's slice in a job); returns the
        losses, averaged over the processes of a job."""
        if self.channels_last:
            batch = {k: as_channels_last(v) for k, v in batch.items()}
        for critic in self.critics.values():
            critic.requires_grad_(False)
        with self.autocast():
            loss, logs, fakes = self._generator_loss(batch)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt_g)
        if self.use_gan:
            for critic in self.critics.values():
                critic.requires_grad_(True)
            with self.autocast():
                d_loss, d_logs = self._critic_loss(batch, fakes)
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler.scale(d_loss).backward()
            self.scaler.step(self.opt_d)
            logs.update(d_logs)
        self.scaler.update()
        return logs if self.job is None else self.job.mean(logs)

    def end_epoch(self) -> None:
        """Advance the learning-rate schedules by one epoch."""
        with warnings.catch_warnings():
            # fp16's gradient scaler may have skipped every optimiser step of an epoch while it
            # finds its scale; PyTorch then warns that the schedule steps first. The epoch ran
            # at its own rate all the same, and the schedule counts epochs, not steps.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler")
            self.sched_g.step()
            if self.sched_d is not None:
                self.sched_d.step()

    def calibrate(self, patches: dict[str, np.ndarray], epoch: int) -> None:
        """Measure the normalisation statistics of F on the epoch's ``X`` patches and of G on
        its ``Y`` patches (``(N, C, D, H, W)``; at most ``CALIBRATION_PATCHES`` of each, drawn
        with the run's seed and ``epoch``), with the weights as they are now: saved with them,
        they let inference run in large tiles (``revmed.nn.norm_statistics``). None when a
        direction has no patches or did not run all its norms (a compiled network hides them
        from the hooks). Nothing for a family without tiles.

        Measured after the epoch rather than gathered while it trained: statistics gathered
        from the epoch's training calls mix weights from its first step to its last, and
        tiles with them scored 0.02-0.20 dB below these on the quality benchmark's runs
        (benchmarks/norm_statistics.py, docs/inference.md)."""
        if not self.tiles:
            return
        rng = np.random.default_rng([self.seed, epoch])
        found: dict[str, Statistics] = {}
        self.model.eval()
        try:
            for key, domain, run in (("forward", "X", self.model),
                                     ("reverse", "Y", self.model.reverse)):
                data = patches.get(domain)
                if data is None or not len(data):
                    self.norm_statistics = None
                    return
                chosen = np.sort(rng.permutation(len(data))[:CALIBRATION_PATCHES])
                batches = (torch.from_numpy(np.ascontiguousarray(
                    data[chosen[i:i + self.batch_size]])).float().to(self.device)
                    for i in range(0, len(chosen), self.batch_size))
                found[key] = collect_norm_statistics(self.model, run, batches)
        finally:
            self.model.train()
        complete = all(set(found[key]) == self.model.norm_names(key == "reverse")
                       for key in found)
        self.norm_statistics = found if complete else None

    def core_reconstruction_error(self, x: torch.Tensor) -> float:
        """``max |C^-1(C(h)) - h|`` of the invertible core on the features ``h`` of the input
        batch ``x``, under the training precision: how exact the memory-free backward's
        rebuilt activations are."""
        self.model.eval()  # a check, not training: the norm statistics leave it out
        try:
            with torch.no_grad(), self.autocast():
                return invertibility_error(self.model.core, self.model.core_input(x))
        finally:
            self.model.train()

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers, schedules, gradient scaler and the objective's own state."""
        state = {"generator": self.model.state_dict(),
                 "critics": {k: d.state_dict() for k, d in self.critics.items()},
                 "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(),
                 "scaler": self.scaler.state_dict(), **self.objective.state_dict()}
        if self.norm_statistics is not None:
            state["norm_statistics"] = self.norm_statistics
        if self.opt_d is not None:
            state["opt_d"] = self.opt_d.state_dict()
            state["sched_d"] = self.sched_d.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved (a checkpoint's ``state``)."""
        self.model.load_state_dict(state["generator"])
        self.norm_statistics = state.get("norm_statistics")
        for key, critic in self.critics.items():
            critic.load_state_dict(state["critics"][key])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.opt_d is not None and "opt_d" in state:
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        self.objective.load_state_dict(state, self.device)
