"""3D PatchGAN discriminator (the pix2pix/CycleGAN critic, with 3D convolutions).

Kernel 4, LeakyReLU(0.2), instance norm on every layer but the first and the last; ``layers``
stride-2 convolutions, then one stride-1 layer and a stride-1 convolution to one channel of
logits, one per overlapping patch of the input. In paired mode the critic is conditional: it
sees the input volume concatenated with the real or generated output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from revmed.errors import ConfigError
from revmed.models.initialisation import init_weights
from revmed.preset import DataSection, ModelSection


class PatchDiscriminator3D(nn.Sequential):
    """``(B, in_channels, D, H, W) -> (B, 1, d, h, w)`` patch logits.

    Args:
        in_channels: image channels (input + output channels when conditional).
        width: channels of the first layer; doubled per layer up to 8x.
        layers: stride-2 layers (3 in pix2pix's 70x70 PatchGAN).
        init_std: std of the N(0, std) initialisation.
        affine: instance norms with a learned scale and shift (revmed's first form); the
            authors' 3D critic has none.

    ``full_precision = True`` runs the critic in float32 under an autocast context (see
    ``revmed.engine.step``: PyTorch's CPU bf16 convolution gives wrong weight gradients where
    the critic's last layers reach outputs 2 voxels deep).
    """

    full_precision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.full_precision:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())

    def __init__(self, in_channels: int, width: int = 32, layers: int = 3,
                 init_std: float = 0.02, affine: bool = True) -> None:
        blocks: list[nn.Module] = [nn.Conv3d(in_channels, width, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        channels = width
        for n in range(1, layers + 1):
            out = width * min(2 ** n, 8)
            stride = 2 if n < layers else 1
            blocks += [nn.Conv3d(channels, out, 4, stride=stride, padding=1),
                       nn.InstanceNorm3d(out, affine=affine), nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        blocks.append(nn.Conv3d(channels, 1, 4, stride=1, padding=1))
        super().__init__(*blocks)
        init_weights(self, init_std)


def smallest_critic_edge(layers: int) -> int:
    """The smallest input edge (voxels per axis) at which a critic of ``layers`` stride-2
    layers gives a logit: each kernel-4 stride-2 layer halves an edge (rounding down) and the
    two stride-1 layers each take one voxel off, so ``n // 2**layers - 2 >= 1``, i.e.
    ``n >= 3 x 2**layers`` (12 for the authors' 3D critic, 24 for pix2pix's)."""
    return 3 * 2 ** layers


def make_critics(model: ModelSection, data: DataSection,
                 objective: str) -> dict[str, PatchDiscriminator3D]:
    """The critics ``{"X": D_X, "Y": D_Y}`` of a RevGAN's ``[model]`` keys (``disc_width``,
    ``disc_layers``, ``init_std``, ``layers``: the authors' critics have non-affine norms) for
    ``data``'s channels; conditional (they also see the input) for the ``paired`` objective."""
    cx, cy = data.in_channels, data.out_channels
    extra = {"X": cy, "Y": cx} if objective == "paired" else {"X": 0, "Y": 0}
    return {domain: PatchDiscriminator3D(channels + extra[domain], model.disc_width,
                                         model.disc_layers, model.init_std,
                                         affine=model.layers != "authors")
            for domain, channels in (("X", cx), ("Y", cy))}


def build_critics(model: ModelSection, data: DataSection, objective: str,
                  patch_size: Sequence[int]) -> dict[str, PatchDiscriminator3D]:
    """``make_critics`` for training on patches of ``patch_size``; ``ConfigError`` when they
    are smaller than the critics' smallest input (``smallest_critic_edge``)."""
    needed = smallest_critic_edge(model.disc_layers)
    if min(patch_size) < needed:
        raise ConfigError(f"key 'patch.size': the critic with disc_layers={model.disc_layers} "
                          f"needs patches of at least {needed} voxels per axis, got "
                          f"{min(patch_size)}")
    return make_critics(model, data, objective)
