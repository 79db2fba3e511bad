"""3D RevGAN generator (van der Ouderaa & Worrall, CVPR 2019; MIDL 2019 chest-CT abstract).

Per domain an SRCNN-style encoder (replication pad + 3x3x3 convolution + ReLU, lifting the
image to ``width`` channels) and decoder (1x1x1 convolution back to image channels), around one
shared invertible core ``C`` of additive-coupling blocks::

    F = Dec_Y . C     . Enc_X      (X -> Y, e.g. low -> high resolution, B50f -> B30f)
    G = Dec_X . C^-1  . Enc_Y      (Y -> X, the same core weights run backwards)

Each coupling's sub-networks are pad, 3x3x3 conv, instance norm, ReLU, pad, 3x3x3 conv, and the
last convolution starts at zero, so the core starts as the identity. ``depth=0`` gives the
plain 3D-SRCNN baseline of the paper's tables. With ``residual=True`` the network predicts a
correction to its input (``F(x) = x + Dec_Y(C(Enc_X(x)))``), so an untrained model already
equals the interpolated input (the decoders start at zero); this needs matching input and
output channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from revmed.models.registry import ModelFamily, register
from revmed.nn import AdditiveCoupling, ReversibleSequence
from revmed.preset import InvalidKey, ModelSection, Preset, flag, integer, key, number


def coupling_subnet(channels: int) -> nn.Sequential:
    """``(B, channels, D, H, W) -> (B, channels, D, H, W)``; the last convolution starts at zero."""
    last = nn.Conv3d(channels, channels, 3)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    last.revmed_zero_init = True  # init_weights leaves it at zero
    return nn.Sequential(
        nn.ReplicationPad3d(1), nn.Conv3d(channels, channels, 3),
        nn.InstanceNorm3d(channels, affine=True), nn.ReLU(inplace=True),
        nn.ReplicationPad3d(1), last,
    )


def encoder(in_channels: int, width: int) -> nn.Sequential:
    """``(B, in_channels, D, H, W) -> (B, width, D, H, W)``."""
    return nn.Sequential(nn.ReplicationPad3d(1), nn.Conv3d(in_channels, width, 3),
                         nn.ReLU(inplace=True))


def decoder(width: int, out_channels: int) -> nn.Conv3d:
    """``(B, width, D, H, W) -> (B, out_channels, D, H, W)``."""
    return nn.Conv3d(width, out_channels, 1)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std) convolution weights and zero biases, norms at N(1, std); zero-init convs stay."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d | nn.ConvTranspose3d) and not getattr(m, "revmed_zero_init",
                                                                          False):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm3d | nn.GroupNorm) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class RevGAN3D(nn.Module):
    """The two generators F (X -> Y) and G (Y -> X) sharing one invertible core.

    Args:
        in_channels: channels of domain X (the input of ``forward``).
        out_channels: channels of domain Y (the output of ``forward``).
        width: channels inside the core (even: each coupling splits them in two).
        depth: additive-coupling blocks in the core (0: SRCNN baseline).
        residual: add the input to the output (needs ``in_channels == out_channels``).
        memory_saving: rebuild the core's activations in backward instead of storing them.
        init_std: std of the N(0, std) initialisation.

    ``forward``: ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``;
    ``reverse``: ``(B, out_channels, D, H, W) -> (B, in_channels, D, H, W)``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 32,
                 depth: int = 2, residual: bool = False, memory_saving: bool = True,
                 init_std: float = 0.02) -> None:
        super().__init__()
        if width < 2 or width % 2:
            raise ValueError(f"width must be even and at least 2, got {width}")
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        self.residual = residual
        self.enc_x, self.dec_x = encoder(in_channels, width), decoder(width, in_channels)
        self.enc_y, self.dec_y = encoder(out_channels, width), decoder(width, out_channels)
        half = width // 2
        self.core = ReversibleSequence(
            [AdditiveCoupling(coupling_subnet(half), coupling_subnet(half)) for _ in range(depth)],
            memory_saving=memory_saving,
        )
        init_weights(self, init_std)
        if residual:  # start exactly at the interpolated input
            for dec in (self.dec_x, self.dec_y):
                nn.init.zeros_(dec.weight)
                nn.init.zeros_(dec.bias)

    @property
    def depth(self) -> int:
        return len(self.core.blocks)

    def core_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the core sees for a domain-X input: ``Enc_X(x)``, ``(B, width, D, H, W)``."""
        return self.enc_x(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F: domain X -> domain Y."""
        y = self.dec_y(self.core(self.enc_x(x)))
        return x + y if self.residual else y

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        """G: domain Y -> domain X, through the inverse of the same core."""
        x = self.dec_x(self.core.inverse(self.enc_y(y)))
        return y + x if self.residual else x


@dataclass(frozen=True)
class RevGANSection(ModelSection):
    """``[model]`` of a RevGAN preset; the critics' keys are here too, as only RevGAN
    objectives train critics."""

    depth: int = key(integer(0), 2, "RevGAN: additive-coupling blocks in the invertible core")
    residual: bool = key(flag, False, "RevGAN: output = upsampled input + network")
    init_std: float = key(number(0.0), 0.02, "RevGAN: std of the N(0, std) initialisation")
    disc_width: int = key(integer(1), 32, "PatchGAN: channels of the first layer")
    disc_layers: int = key(integer(1), 3, "PatchGAN: stride-2 layers")


def _kwargs(preset: Preset) -> dict[str, Any]:
    data, model = preset.data, preset.model
    return {"in_channels": data.in_channels, "out_channels": data.out_channels,
            "width": model.width, "depth": model.depth, "residual": model.residual,
            "memory_saving": model.memory_saving, "init_std": model.init_std}


def _check(model: RevGANSection) -> None:
    if model.width % 2:
        raise InvalidKey("model.width", "must be even (couplings split it in two), got "
                         f"{model.width}")


FAMILY = register(ModelFamily(name="revgan3d", section=RevGANSection, network=RevGAN3D,
                              kwargs=_kwargs, depth_key="depth", check=_check))
