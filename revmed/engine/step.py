"""One training step of a preset: the networks, objective, optimisers and how they are updated.

``TrainingStep`` is what ``Trainer`` runs each step and what ``revmed.planner`` measures, so the
two cannot drift apart. It builds the generator (or segmentation network), the critics when the
objective has a GAN term, the objective, Adam for each, and a gradient scaler for the
precision; with ``train.channels_last`` the networks and batches are put in channels-last
order (``revmed.memory_format``), with ``train.compile`` the networks' plain parts are
compiled (``revmed.compilation``). Calling it on a batch takes one optimisation step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from revmed.compilation import check_compiler, compile_plain_parts
from revmed.engine.distributed import Distributed, LossModule, wrap
from revmed.engine.objectives import build_objective
from revmed.errors import ConfigError
from revmed.memory_format import as_channels_last, to_channels_last
from revmed.models import build_discriminators, build_model, model_spec
from revmed.precision import autocast, grad_scaler
from revmed.shapes import shape_text


def uses_critics(preset: dict[str, Any]) -> bool:
    """Whether ``preset`` trains PatchGAN critics (a RevGAN objective with a GAN term)."""
    train = preset["train"]
    return train["objective"] != "segmentation" and train["lambda_gan"] > 0


def refuse_cpu_bf16_depth_two(model: nn.Module, preset: dict[str, Any],
                              device: torch.device) -> None:
    """Raise ``ConfigError`` for bf16 training on the CPU when one of the iUNet's scales is 2
    voxels deep (first spatial axis). There PyTorch's CPU bf16 convolution (oneDNN, seen on
    PyTorch 2.13) returns wrong weight gradients for 3x3x3 kernels, of order 1e30, and
    training turns to NaN within a few steps; fp32, other depths and CUDA are not affected."""
    precision, patch = preset["train"]["precision"], preset["patch"]["size"]
    if device.type != "cpu" or precision != "bf16" or not hasattr(model, "layout"):
        return
    for row in model.layout(patch):
        if row["size"][0] == 2:
            least = 3 * model.core.multiple
            raise ConfigError(
                f"preset {preset['name']}: bf16 training on the CPU with patch.size "
                f"{shape_text(patch)} puts iUNet scale {row['scale']} at "
                f"{shape_text(row['size'])}, 2 voxels deep, where PyTorch's CPU bf16 "
                "convolution returns wrong weight gradients; use --precision fp32 on the CPU, "
                f"a patch at least {least} deep, or fewer model.scales")


class TrainingStep:
    """The trainable parts of ``preset`` on ``device``; ``step(batch)`` updates them once.

    With ``job`` (a ``torchrun`` job) each step's losses run inside DistributedDataParallel,
    and the unpaired objective's image pools are seeded per process.
    """

    def __init__(self, preset: dict[str, Any], device: torch.device,
                 job: Distributed | None = None) -> None:
        train = preset["train"]
        self.device, self.job, self.precision = device, job, train["precision"]
        self.model_kind, self.model_kwargs = model_spec(preset)
        self.model = build_model(self.model_kind, **self.model_kwargs).to(device)
        refuse_cpu_bf16_depth_two(self.model, preset, device)
        rank = job.rank if job is not None else 0
        self.objective = build_objective({**train, "seed": train["seed"] + 1000 * rank})
        self.use_gan = uses_critics(preset)
        self.critics = ({k: d.to(device) for k, d in build_discriminators(preset).items()}
                        if self.use_gan else {})
        self.channels_last = train["channels_last"]
        if train["compile"]:
            check_compiler(device)
        for net in (self.model, *self.critics.values()):
            if self.channels_last:
                to_channels_last(net)
            if train["compile"]:
                compile_plain_parts(net)
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
        betas = tuple(train["betas"])
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=train["lr"], betas=betas)
        critic_params = [p for d in self.critics.values() for p in d.parameters()]
        self.opt_d = (torch.optim.Adam(critic_params, lr=train["lr"], betas=betas)
                      if critic_params else None)

    def autocast(self):
        """The autocast context of the preset's precision on this device."""
        return autocast(self.precision, self.device)

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
