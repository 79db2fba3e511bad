"""Training objectives of the 3D RevGAN, in both directions.

* ``Pix2PixObjective`` (paired): ``L = L_GAN(F, D_Y) + L_GAN(G, D_X) + lambda (|F(x) - y|_1 +
  |G(y) - x|_1)`` with conditional critics (they see the input beside the real or generated
  output) and the binary cross-entropy GAN loss, as in pix2pix; lambda = 100.
* ``CycleGANObjective`` (unpaired): ``L = L_LSGAN(F, D_Y) + L_LSGAN(G, D_X) +
  lambda (|G(F(x)) - x|_1 + |F(G(y)) - y|_1)`` with least-squares GAN losses and a pool of
  earlier generated volumes for the critics, as in CycleGAN; lambda = 10.

``lambda_gan = 0`` drops the adversarial terms (the paper's "w/o L_GAN" models) and the critics
are then not trained at all. Batches are dicts of ``(B, C, D, H, W)`` tensors ``X`` and ``Y``.
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from revmed.preset import TrainSection
from revmed.regions import LabelSet


def gan_loss(logits: torch.Tensor, real: bool, least_squares: bool) -> torch.Tensor:
    """Critic loss on ``logits`` against the label ``real`` (BCE with logits, or least squares)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if least_squares:
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


class ImagePool:
    """The last ``size`` generated batches; a query returns, per item, the new volume or (half
    of the time, once the pool is full) an older one that it replaces (Shrivastava et al. 2017).
    ``size=0`` passes volumes through."""

    def __init__(self, size: int, rng: random.Random | None = None) -> None:
        self.size = size
        self.items: list[torch.Tensor] = []
        self.rng = rng or random.Random(0)

    def query(self, volumes: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return volumes
        out = []
        for volume in volumes.detach():
            volume = volume[None].clone()  # its own storage, not a view of the batch
            if len(self.items) < self.size:
                self.items.append(volume)
                out.append(volume)
            elif self.rng.random() < 0.5:
                k = self.rng.randrange(self.size)
                out.append(self.items[k])
                self.items[k] = volume
            else:
                out.append(volume)
        return torch.cat(out)


class Objective:
    """What every objective has: a state to save with the run (none, by default)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        return None


class Pix2PixObjective(Objective):
    """Paired training in both directions with conditional PatchGAN critics."""

    def __init__(self, lambda_l1: float = 100.0, lambda_gan: float = 1.0) -> None:
        self.lambda_l1, self.lambda_gan = lambda_l1, lambda_gan

    def generator_step(self, model: nn.Module, critics: dict[str, nn.Module],
                       batch: dict[str, torch.Tensor]):
        """Returns ``(loss, logs, fakes)``; ``fakes`` feeds ``critic_step``."""
        x, y = batch["X"], batch["Y"]
        fake_y, fake_x = model(x), model.reverse(y)
        l1 = F.l1_loss(fake_y, y) + F.l1_loss(fake_x, x)
        loss = self.lambda_l1 * l1
        logs = {"l1": float(l1.detach())}
        if self.lambda_gan > 0:
            adv = (gan_loss(critics["Y"](torch.cat([x, fake_y], 1)), True, False)
                   + gan_loss(critics["X"](torch.cat([y, fake_x], 1)), True, False))
            loss = loss + self.lambda_gan * adv
            logs["g_gan"] = float(adv.detach())
        logs["g_loss"] = float(loss.detach())
        return loss, logs, {"X": fake_x.detach(), "Y": fake_y.detach()}

    def critic_step(self, critics: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                    fakes: dict[str, torch.Tensor]):
        """Returns ``(loss, logs)`` of both critics: real pairs as real, generated as fake."""
        x, y = batch["X"], batch["Y"]
        loss = 0.5 * (gan_loss(critics["Y"](torch.cat([x, y], 1)), True, False)
                      + gan_loss(critics["Y"](torch.cat([x, fakes["Y"]], 1)), False, False)
                      + gan_loss(critics["X"](torch.cat([y, x], 1)), True, False)
                      + gan_loss(critics["X"](torch.cat([y, fakes["X"]], 1)), False, False))
        return loss, {"d_loss": float(loss.detach())}


class CycleGANObjective(Objective):
    """Unpaired training: least-squares GAN both ways plus the cycle loss, with image pools."""

    def __init__(self, lambda_cycle: float = 10.0, lambda_gan: float = 1.0,
                 pool_size: int = 50, seed: int = 0) -> None:
        self.lambda_cycle, self.lambda_gan = lambda_cycle, lambda_gan
        self.pools = {d: ImagePool(pool_size, random.Random(seed + i)) for i, d in
                      enumerate("XY")}

    def state_dict(self) -> dict[str, Any]:
        """The image pools and their random states (``pools``, ``pool_rng``)."""
        return {"pools": {k: list(p.items) for k, p in self.pools.items()},
                "pool_rng": {k: p.rng.getstate() for k, p in self.pools.items()}}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        for key, items in state.get("pools", {}).items():
            self.pools[key].items = [t.to(device) for t in items]
        for key, rng in state.get("pool_rng", {}).items():
            self.pools[key].rng.setstate(rng)

    def generator_step(self, model: nn.Module, critics: dict[str, nn.Module],
                       batch: dict[str, torch.Tensor]):
        x, y = batch["X"], batch["Y"]
        fake_y = model(x)
        cycle = F.l1_loss(model.reverse(fake_y), x)
        fake_x = model.reverse(y)
        cycle = cycle + F.l1_loss(model(fake_x), y)
        loss = self.lambda_cycle * cycle
        logs = {"cycle": float(cycle.detach())}
        if self.lambda_gan > 0:
            adv = gan_loss(critics["Y"](fake_y), True, True) + gan_loss(critics["X"](fake_x),
                                                                       True, True)
            loss = loss + self.lambda_gan * adv
            logs["g_gan"] = float(adv.detach())
        logs["g_loss"] = float(loss.detach())
        return loss, logs, {"X": fake_x.detach(), "Y": fake_y.detach()}

    def critic_step(self, critics: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                    fakes: dict[str, torch.Tensor]):
        loss = 0.0
        for domain in "XY":
            old = self.pools[domain].query(fakes[domain])
            loss = loss + 0.5 * (gan_loss(critics[domain](batch[domain]), True, True)
                                 + gan_loss(critics[domain](old), False, True))
        return loss, {"d_loss": float(loss.detach())}


class SegmentationObjective(Objective):
    """Sigmoid outputs for the (possibly overlapping) regions of a label set: soft Dice
    (MONAI's ``DiceLoss``) plus binary cross-entropy, per region channel.

    MONAI's ``DiceCELoss`` is not used: for outputs of several channels its cross-entropy term
    is a softmax over the channels even with ``sigmoid=True``, which is wrong for nested
    regions (a voxel of the enhancing tumour is in all three).

    Batches hold ``X`` ``(B, C, D, H, W)`` and an integer ``label`` map ``(B, 1, D, H, W)``;
    the model maps ``X`` to ``(B, R, D, H, W)`` logits, one channel per region of ``labels``.
    """

    def __init__(self, labels: LabelSet) -> None:
        from monai.losses import DiceLoss

        self.dice, self.labels = DiceLoss(sigmoid=True), labels

    def generator_step(self, model: nn.Module, critics: dict[str, nn.Module],
                       batch: dict[str, torch.Tensor]):
        logits = model(batch["X"])
        target = self.labels.to_regions(batch["label"])
        dice = self.dice(logits, target)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        loss = dice + bce
        return loss, {"loss": float(loss.detach()), "dice_loss": float(dice.detach()),
                      "bce": float(bce.detach())}, {}


def build_objective(train: TrainSection, seed: int | None = None,
                    labels: LabelSet | None = None) -> Objective:
    """The objective a preset's ``[train]`` section names (``seed``: of the image pools,
    ``train.seed`` by default; ``labels``: the regions a segmentation network learns, the
    label set of its data, which segmentation needs)."""
    if train.objective == "paired":
        return Pix2PixObjective(train.lambda_l1, train.lambda_gan)
    if train.objective == "unpaired":
        return CycleGANObjective(train.lambda_cycle, train.lambda_gan, train.pool_size,
                                 train.seed if seed is None else seed)
    if train.objective == "segmentation":
        if labels is None:
            raise ValueError("the segmentation objective needs the label set of its data")
        return SegmentationObjective(labels)
    raise ValueError(f"unknown objective {train.objective!r}")
