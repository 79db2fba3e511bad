"""3D RevGAN generator (van der Ouderaa & Worrall, CVPR 2019; MIDL 2019 chest-CT abstract).

Per domain an encoder (lifting the image to ``width`` feature channels) and a decoder (back to
image channels), around one shared invertible core ``C`` of additive-coupling blocks::

    F = Dec_Y . C     . Enc_X      (X -> Y, e.g. low -> high resolution, B50f -> B30f)
    G = Dec_X . C^-1  . Enc_Y      (Y -> X, the same core weights run backwards)

The encoders and decoders are one of the variants of ``revmed.models.encoders``: the papers'
SRCNN-style ones (a 3x3x3 convolution in, a 1x1x1 convolution out; with ``depth=0`` the linear
``srcnn`` variant is the 3D-SRCNN baseline of the paper's tables) or the strided ones of the
authors' chest-CT runs, whose core runs at half the resolution. The strided generator pads odd
sizes by replication to even ones and crops its output back.

Each coupling's sub-networks are pad, 3x3x3 conv, instance norm, ReLU, pad, 3x3x3 conv, and the
last convolution starts at zero, so the core starts as the identity. ``layers`` says whose
layers: ``"authors"`` builds them as the authors' 3D code does. For the strided generator that
is a norm before the first convolution of each sub-network, and norms without a learned scale
and shift everywhere, as well as the encoder's zero-padded stride-2 convolution
(``revmed.models.encoders``); for the SRCNN-style generator the sub-networks are already theirs
(their batch norm over a batch of one volume is the affine instance norm used here).
``"revmed"`` is revmed's first form (affine norms, no leading norm), which checkpoints without
``layers`` hold. With ``residual=True`` the
network predicts a correction to its input (``F(x) = x + Dec_Y(C(Enc_X(x)))``), so an
untrained model already equals the interpolated input (the decoders' last convolutions start
at zero); this needs matching input and output channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from revmed.errors import ConfigError
from revmed.models.discriminator import smallest_critic_edge
from revmed.models.encoders import ENCODERS, build_codec, last_convolution
from revmed.models.initialisation import init_weights
from revmed.models.registry import ModelFamily, register
from revmed.nn import AdditiveCoupling, ReversibleSequence
from revmed.nn.reach import conv_reach
from revmed.preset import (DataSection, InvalidKey, ModelSection, TrainSection, flag,
                           integer, key, number, text)


#: Whose layers a RevGAN builds (see the module doc).
LAYERS = ("revmed", "authors")


def coupling_subnet(channels: int, leading_norm: bool = False,
                    affine: bool = True) -> nn.Sequential:
    """``(B, channels, D, H, W) -> (B, channels, D, H, W)``; the last convolution starts at zero.
    ``leading_norm``: an instance norm first (the authors' strided core); ``affine``: norms with
    a learned scale and shift."""
    last = nn.Conv3d(channels, channels, 3)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    last.revmed_zero_init = True  # init_weights leaves it at zero
    first = [nn.InstanceNorm3d(channels, affine=affine)] if leading_norm else []
    return nn.Sequential(
        *first, nn.ReplicationPad3d(1), nn.Conv3d(channels, channels, 3),
        nn.InstanceNorm3d(channels, affine=affine), nn.ReLU(inplace=True),
        nn.ReplicationPad3d(1), last,
    )


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
        encoder: the encoder and decoder variant (``revmed.models.encoders.ENCODERS``); the
            default is revmed's first form, which checkpoints without this argument hold.
        layers: ``"authors"`` (the authors' 3D layers) or ``"revmed"`` (see the module doc);
            the default is the form checkpoints without this argument hold.

    ``forward``: ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``;
    ``reverse``: ``(B, out_channels, D, H, W) -> (B, in_channels, D, H, W)``; any D, H, W.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 32,
                 depth: int = 2, residual: bool = False, memory_saving: bool = True,
                 init_std: float = 0.02, encoder: str = "srcnn-relu",
                 layers: str = "revmed") -> None:
        super().__init__()
        if width < 2 or width % 2 or (encoder == "strided" and width % 4):
            raise ValueError(f"width must be even and at least 2 (a multiple of 4 for the "
                             f"strided encoder), got {width}")
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        if layers not in LAYERS:
            raise ValueError(f"layers must be one of {', '.join(LAYERS)}, got {layers!r}")
        self.residual, self.encoder, self.stride = residual, encoder, ENCODERS[encoder]
        self.layers, self.core_width = layers, width
        authors = layers == "authors"
        self.enc_x, self.dec_x = build_codec(encoder, in_channels, width, residual, authors)
        self.enc_y, self.dec_y = build_codec(encoder, out_channels, width, residual, authors)
        thick = authors and encoder == "strided"  # the authors' strided core block

        def subnet() -> nn.Sequential:
            return coupling_subnet(width // 2, leading_norm=thick, affine=not thick)

        self.core = ReversibleSequence(
            [AdditiveCoupling(subnet(), subnet()) for _ in range(depth)],
            memory_saving=memory_saving)
        init_weights(self, init_std)
        if residual:  # start exactly at the interpolated input
            for dec in (self.dec_x, self.dec_y):
                nn.init.zeros_(last_convolution(dec).weight)
                nn.init.zeros_(last_convolution(dec).bias)

    @property
    def depth(self) -> int:
        return len(self.core.blocks)

    def parts(self, reverse: bool = False) -> tuple[nn.Module, nn.Module, nn.Module]:
        """``(encoder, core, decoder)`` that F (or G with ``reverse``) runs."""
        return (self.enc_y, self.core, self.dec_x) if reverse else (self.enc_x, self.core,
                                                                     self.dec_y)

    def norm_names(self, reverse: bool = False) -> set[str]:
        """Dotted names of the instance norms F (or G with ``reverse``) runs: those whose
        statistics tiled inference needs (``revmed.nn.norm_statistics``)."""
        prefixes = ("enc_y", "core", "dec_x") if reverse else ("enc_x", "core", "dec_y")
        return {f"{prefix}.{name}" for prefix, part in zip(prefixes, self.parts(reverse))
                for name, m in part.named_modules() if isinstance(m, nn.InstanceNorm3d)}

    def inference_bytes_per_voxel(self) -> int:
        """Bytes per input voxel a forward pass without gradients holds at its peak (about
        four core-width float32 tensors, measured; five with margin)."""
        width = self.core_width
        return 4 * (5 * width + 4)

    def halo(self, reverse: bool = False) -> int:
        """Voxels of input beyond an output voxel that it may depend on, along each axis, for
        F (or G with ``reverse``): a multiple of the stride, so tiles read this far stay on the
        core's grid (``revmed.inference.tiles``)."""
        encode, _, decode = self.parts(reverse)
        reach, scale = conv_reach(encode)
        core, scale = conv_reach(self.core, scale)
        out, _ = conv_reach(decode, scale)
        total = math.ceil(reach + core + out) + self.stride - 1
        return -(-total // self.stride) * self.stride

    def _padding(self, size) -> list[int]:
        """``F.pad``'s list (last axis first) that makes ``size`` a multiple of the stride."""
        pads = [(-n) % self.stride for n in size]
        return [p for pad in reversed(pads) for p in (0, pad)]

    def _translate(self, x: torch.Tensor, encode: nn.Module, core, decode: nn.Module):
        size = x.shape[2:]
        padding = self._padding(size)
        padded = F.pad(x, padding, mode="replicate") if any(padding) else x
        out = decode(core(encode(padded)))
        if any(padding):
            out = out[(..., *(slice(0, n) for n in size))]
        return x + out if self.residual else out

    def core_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the core sees for a domain-X input: ``Enc_X(x)``, ``(B, width, d, h, w)``
        (the input's size, halved by the strided encoder)."""
        padding = self._padding(x.shape[2:])
        return self.enc_x(F.pad(x, padding, mode="replicate") if any(padding) else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F: domain X -> domain Y."""
        return self._translate(x, self.enc_x, self.core, self.dec_y)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        """G: domain Y -> domain X, through the inverse of the same core."""
        return self._translate(y, self.enc_y, self.core.inverse, self.dec_x)


@dataclass(frozen=True)
class RevGANSection(ModelSection):
    """``[model]`` of a RevGAN preset; the critics' keys are here too, as only RevGAN
    objectives train critics."""

    depth: int = key(integer(0), 2, "RevGAN: additive-coupling blocks in the invertible core")
    encoder: str = key(text(tuple(ENCODERS)), "srcnn-relu",
                       "RevGAN: encoder/decoder: srcnn (the papers' linear 3x3x3 lift), "
                       "srcnn-relu (the same with a ReLU), strided (the chest-CT runs': core "
                       "at half resolution)")
    layers: str = key(text(LAYERS), "revmed",
                      "RevGAN: authors (the layers of the authors' 3D code: for the strided "
                      "encoder non-affine norms, a norm leading each coupling branch, zero "
                      "padding in the stride-2 convolution; critics with non-affine norms) or "
                      "revmed (affine norms, replication padding)")
    residual: bool = key(flag, False, "RevGAN: output = upsampled input + network")
    init_std: float = key(number(0.0), 0.02, "RevGAN: std of the N(0, std) initialisation")
    disc_width: int = key(integer(1), 32, "PatchGAN: channels of the first layer")
    disc_layers: int = key(integer(1), 2,
                           "PatchGAN: stride-2 layers (2: the authors' 3D critic, receptive "
                           "field 34^3; 3: the 2D pix2pix one, 70^3)")


def _kwargs(model: RevGANSection, data: DataSection) -> dict[str, Any]:
    return {"in_channels": data.in_channels, "out_channels": data.out_channels,
            "width": model.width, "depth": model.depth, "residual": model.residual,
            "encoder": model.encoder, "layers": model.layers,
            "memory_saving": model.memory_saving, "init_std": model.init_std}


def _check(model: RevGANSection) -> None:
    if model.width % 2:
        raise InvalidKey("model.width", "must be even (couplings split it in two), got "
                         f"{model.width}")
    if model.encoder == "strided" and model.width % 4:
        raise InvalidKey("model.width", "the strided encoder lifts to width / 2 channels "
                         f"first, so it needs a multiple of 4, got {model.width}")


def smallest_training_edge(model: RevGANSection, train: TrainSection) -> int:
    """The smallest patch edge (voxels) training runs at: the critics' smallest input when the
    objective trains critics (``smallest_critic_edge``), else 1 (the generator takes any)."""
    return smallest_critic_edge(model.disc_layers) if train.uses_critics else 1


def check_intensity(network: RevGAN3D, data: DataSection, train: TrainSection, patch: Any,
                    device: Any) -> None:
    """``ConfigError`` for an intensity mapping whose outputs cannot be mapped back to the
    input's units: a RevGAN needs a fixed map (``window`` or ``zscore-dataset``), and a tanh
    output (the strided decoder without ``residual``) cannot reach z-scores beyond [-1, 1]."""
    intensity = data.intensity
    if intensity not in ("window", "zscore-dataset"):
        raise ConfigError("key 'data.intensity': a RevGAN needs a fixed map ('window' or "
                          "'zscore-dataset') so outputs map back to the input's units, got "
                          f"{intensity!r}")
    if intensity == "zscore-dataset" and network.encoder == "strided" and not network.residual:
        raise ConfigError("key 'data.intensity': the strided decoder ends in tanh, which "
                          "cannot reach z-scores outside [-1, 1]; set model.residual = true "
                          "or use data.intensity = 'window'")


FAMILY = register(ModelFamily(name="revgan3d", section=RevGANSection, network=RevGAN3D,
                              kwargs=_kwargs, depth_key="depth", check=_check, tiles=True,
                              smallest_edge=smallest_training_edge,
                              check_training=check_intensity, tasks=("sr", "da")))
