"""3D invertible U-Net (iUNet; Etmann, Ke & Schönlieb, 2020, sections 3 and 4.2).

A learnable 1x1x1 convolution lifts the image to ``channels`` feature maps (the *channel
blow-up*), an invertible U-Net maps them to as many feature maps of the same size, and a second
1x1x1 convolution projects them to ``out_channels`` (logits: e.g. ET/TC/WT for BraTS), as in
the paper's Figure 5. The part in between, :class:`IUNetCore`, is invertible; with ``S``
scales (``i = 0 .. S-1``) and ``C_i = channels * 2**i`` channels at scale ``i``::

    left side, i = 0 .. S-1                   right side, i = S-1 .. 0
    y_i  = Phi_i^L(x_i)                       v_i = Phi_i^R(u_i)          (u_{S-1} = y_{S-1})
    (c_i, d_i) = split(y_i)      if i < S-1   u_{i-1} = concat(c_{i-1}, U_i(v_i))   if i > 0
    x_{i+1} = D_i(d_i)           if i < S-1   output: v_0

``Phi`` is a :class:`~revmed.nn.ReversibleSequence` of ``blocks_per_scale`` additive couplings.
``split`` keeps the first ``3/4 C_i`` channels as the skip ``c_i`` and hands the last
``C_i / 4`` to the learnable orthogonal downsampling ``D_i`` (a 2x2x2 window becomes 8
channels), so ``x_{i+1}`` has ``8 * C_i / 4 = 2 C_i`` channels at half the resolution: the split
fraction 1/4 of the paper's Remark 7, which doubles the channels between scales in 3D.

Upsampling: ``U_i`` is a module of its own, ``Inverted(OrthogonalResampling3d(C_i / 4))``: the
adjoint (transposed convolution) of a second learnable orthogonal operator, not tied to
``D_i``. Both start at the Haar matrix, so ``U_i = D_i^{-1}`` at initialisation; training may
move them apart, which the paper allows (its ``U_i`` need not invert ``D_i``) and which keeps
the core invertible, since each ``U_i`` is orthogonal whatever its parameters. Untied operators
give the decoder its own learnable resampling, as in the reference iUNet implementation, at a
cost of 64 parameters per resampled channel.

Coupling sub-networks (``F`` and ``G`` of each block): 3x3x3 convolution, layer norm, leaky
ReLU, 3x3x3 convolution, layer norm. ``nn.GroupNorm(1, c)`` is the layer norm: with a single
group it normalises each sample over all of (C, D, H, W) together, which is layer normalisation
(Ba et al. 2016) of a volume; unlike ``nn.LayerNorm((C, D, H, W))`` its affine weight and bias
are per channel, so it does not tie the network to one input size. The last norm's weight and
bias start at zero, so every sub-network starts as the zero map, every coupling as the
identity, and, with ``U_i = D_i^{-1}``, the whole core as the identity (paper, section 4.1):
the untrained model is ``post(pre(x))``. The convolutions keep PyTorch's default
initialisation; they do not change the initial function.

Inputs whose size is not a multiple of ``2**(S-1)`` per axis are padded by edge replication
(split evenly between both ends of each axis) before the first convolution and the output is
cropped back. Replication continues the image at its border; zeros would put an artificial edge
there (and zero is not the background of a z-scored MRI).

Memory: with ``memory_saving=True`` each per-scale sequence keeps only its output for the
backward pass, whatever ``blocks_per_scale``; the resampling, split and concatenation are plain
autograd operations whose saved inputs are views of those outputs. The saved activations are
thus two tensors per scale (about ``2.7 * channels`` values per input voxel in all), independent
of the number of couplings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from revmed.errors import ConfigError
from revmed.models.registry import ModelFamily, register
from revmed.nn import (AdditiveCoupling, Inverted, OrthogonalResampling3d, ReversibleSequence,
                       concat_channels, split_channels)
from revmed.preset import DataSection, InvalidKey, ModelSection, TrainSection, integer, key
from revmed.sizes import shape_text

#: Fraction of the channels that is downsampled at each split (3D, Remark 7 of the paper).
SPLIT_FRACTION = 4  # one in four
#: Where the output probabilities start: a tumour region is a few percent of a patch at most.
#: With the logits near 0 (probability 1/2 everywhere) and Adam at lr 1e-3, the CPU demo's
#: first ~80 steps went into learning that most voxels are background. Measured on its own the
#: prior mattered less than the learning rate; it kept the worst data seed above target
#: (docs/benchmarks.md, "demo-seg across data seeds").
OUTPUT_PRIOR = 0.01


def layer_norm(channels: int) -> nn.GroupNorm:
    """Layer norm over (C, D, H, W) per sample, with a per-channel affine map."""
    return nn.GroupNorm(1, channels)


def coupling_subnet(in_channels: int, out_channels: int) -> nn.Sequential:
    """``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``; starts as the zero map.

    3x3x3 conv, layer norm, leaky ReLU, 3x3x3 conv, layer norm whose weight and bias are zero.
    """
    last_norm = layer_norm(out_channels)
    nn.init.zeros_(last_norm.weight)
    nn.init.zeros_(last_norm.bias)
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1), layer_norm(out_channels),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1), last_norm,
    )


def coupling(channels: int) -> AdditiveCoupling:
    """An additive coupling on ``channels`` (>= 2) channels that starts as the identity."""
    first = channels - channels // 2  # AdditiveCoupling gives the odd channel to x1
    return AdditiveCoupling(coupling_subnet(channels // 2, first),
                            coupling_subnet(first, channels // 2))


class IUNetCore(nn.Module):
    """The invertible U-Net on ``channels`` feature maps; ``inverse`` undoes ``forward``.

    Args:
        channels: C, the channels at the finest scale; a multiple of 4 when ``scales > 1``
            (a quarter is downsampled at each split), at least 2 otherwise.
        scales: resolution levels S (S - 1 downsamplings).
        blocks_per_scale: additive couplings per scale on each side.
        memory_saving: run each per-scale sequence without storing its activations.
        resampling_init: init of the orthogonal resampling operators (``"haar"``, ``"shuffle"``
            or ``"random"``); with ``"random"`` the core does not start as the identity.

    ``forward`` and ``inverse``: ``(B, C, D, H, W) -> (B, C, D, H, W)`` with D, H, W multiples
    of ``2**(S-1)``.
    """

    def __init__(self, channels: int, scales: int = 5, blocks_per_scale: int = 2,
                 memory_saving: bool = True, resampling_init: str = "haar") -> None:
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales must be at least 1, got {scales}")
        if blocks_per_scale < 0:
            raise ValueError(f"blocks_per_scale must be at least 0, got {blocks_per_scale}")
        if scales > 1 and (channels < SPLIT_FRACTION or channels % SPLIT_FRACTION):
            raise ValueError(f"channels must be a multiple of {SPLIT_FRACTION} with scales > 1 "
                             f"(a quarter of them is downsampled at each scale), got {channels}")
        if channels < 2:
            raise ValueError(f"channels must be at least 2 (couplings split them), got {channels}")
        self.channels, self.scales, self.blocks_per_scale = channels, scales, blocks_per_scale
        widths = self.widths
        self.left = nn.ModuleList(
            ReversibleSequence([coupling(c) for _ in range(blocks_per_scale)], memory_saving)
            for c in widths)
        self.right = nn.ModuleList(
            ReversibleSequence([coupling(c) for _ in range(blocks_per_scale)], memory_saving)
            for c in widths)
        # down[i]: scale i -> i + 1; up[i]: scale i + 1 -> i (a separate operator, see above)
        self.down = nn.ModuleList(OrthogonalResampling3d(c // SPLIT_FRACTION, resampling_init)
                                  for c in widths[:-1])
        self.up = nn.ModuleList(Inverted(OrthogonalResampling3d(c // SPLIT_FRACTION,
                                                                resampling_init))
                                for c in widths[:-1])

    @property
    def widths(self) -> list[int]:
        """Channels at each scale, finest first: ``channels * 2**i``."""
        return [self.channels * 2 ** i for i in range(self.scales)]

    @property
    def skips(self) -> list[int]:
        """Channels kept for the skip connection at each scale but the last (3/4 of them)."""
        return [c - c // SPLIT_FRACTION for c in self.widths[:-1]]

    @property
    def multiple(self) -> int:
        """Spatial sizes must be multiples of this: ``2**(scales - 1)``."""
        return 2 ** (self.scales - 1)

    @property
    def memory_saving(self) -> bool:
        return all(seq.memory_saving for seq in self.sequences())

    @memory_saving.setter
    def memory_saving(self, value: bool) -> None:
        for seq in self.sequences():
            seq.memory_saving = value

    def sequences(self) -> Iterable[ReversibleSequence]:
        """The per-scale coupling stacks, left side then right side."""
        return [*self.left, *self.right]

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, D, H, W), got {tuple(x.shape)}")
        if any(n % self.multiple for n in x.shape[2:]):
            raise ValueError(f"spatial size {shape_text(x.shape[2:])} is not a multiple of "
                             f"{self.multiple} per axis ({self.scales} scales); pad it first")

    @staticmethod
    def _u_pass(x, skips, first, second, shrink, grow):
        """One pass down through ``first`` and up through ``second``: the shared skeleton of
        ``forward`` (left stacks, D; right stacks, U) and ``inverse`` (inverted right stacks,
        U^-1; inverted left stacks, D^-1)."""
        kept = []
        for i, run in enumerate(first):
            x = run(x)
            if i < len(shrink):
                c, d = split_channels(x, skips[i])
                kept.append(c)
                x = shrink[i](d)
        for i in reversed(range(len(second))):
            x = second[i](x)
            if i > 0:
                x = concat_channels(kept[i - 1], grow[i - 1](x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._u_pass(x, self.skips, list(self.left), list(self.right), list(self.down),
                            list(self.up))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y)
        return self._u_pass(y, self.skips, [s.inverse for s in self.right],
                            [s.inverse for s in self.left], [u.inverse for u in self.up],
                            [d.inverse for d in self.down])

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, scales={self.scales}, "
                f"blocks_per_scale={self.blocks_per_scale}")


class IUNet3D(nn.Module):
    """1x1x1 conv (blow-up), invertible U-Net, 1x1x1 conv (logits).

    Args:
        in_channels: image channels (BraTS: 4 MRI modalities).
        out_channels: output channels (logits; BraTS: ET, TC, WT).
        channels: the channel blow-up, the core's channels at full resolution; a multiple of 4
            when ``scales > 1``. Channels double at each coarser scale.
        scales: resolution levels (the paper's BraTS network: 5).
        blocks_per_scale: additive couplings per scale on each side (paper: 2).
        memory_saving: rebuild the couplings' activations in backward instead of storing them.
        resampling_init: init of the orthogonal down- and upsampling (default Haar).
        prior: the probability every output starts near: the logits' bias starts at
            ``log(prior / (1 - prior))`` (see ``OUTPUT_PRIOR``).

    ``forward``: ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``, any D, H, W >= 1
    (padded by replication to multiples of ``2**(scales - 1)``, then cropped back).
    The invertible part is ``self.core`` (:class:`IUNetCore`).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: int = 16,
                 scales: int = 5, blocks_per_scale: int = 2, memory_saving: bool = True,
                 resampling_init: str = "haar", prior: float = OUTPUT_PRIOR) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got "
                             f"{in_channels} and {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.pre = nn.Conv3d(in_channels, channels, 1)
        self.core = IUNetCore(channels, scales, blocks_per_scale, memory_saving, resampling_init)
        self.post = nn.Conv3d(channels, out_channels, 1)
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        nn.init.constant_(self.post.bias, math.log(prior / (1.0 - prior)))

    @property
    def channels(self) -> int:
        return self.core.channels

    @property
    def scales(self) -> int:
        return self.core.scales

    @property
    def blocks_per_scale(self) -> int:
        return self.core.blocks_per_scale

    @property
    def memory_saving(self) -> bool:
        return self.core.memory_saving

    @memory_saving.setter
    def memory_saving(self, value: bool) -> None:
        self.core.memory_saving = value

    def padding(self, size: Sequence[int]) -> list[tuple[int, int]]:
        """``(before, after)`` replication padding per spatial axis for an input of ``size``."""
        m = self.core.multiple
        pads = [(-n) % m for n in size]
        return [(p // 2, p - p // 2) for p in pads]

    def padded_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """The size the core runs at for an input of ``size``."""
        return tuple(n + a + b for n, (a, b) in zip(size, self.padding(size)))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded by replication to the core's multiple (``padding``)."""
        pads = self.padding(x.shape[2:])
        if not any(a or b for a, b in pads):
            return x
        return F.pad(x, [p for pair in reversed(pads) for p in pair], mode="replicate")

    def core_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the core sees for ``x``: padded and lifted, ``(B, channels, D', H', W')``."""
        return self.pre(self._pad(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        size = x.shape[2:]
        y = self.post(self.core(self.core_input(x)))
        starts = [a for a, _ in self.padding(size)]
        return y[(..., *(slice(a, a + n) for a, n in zip(starts, size)))]

    def layout(self, size: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Per scale: ``scale``, ``channels``, ``size`` (voxels per axis at that scale, for an
        input of ``size``, after padding; None without a size), ``skip`` (channels kept for the
        skip connection; 0 at the coarsest scale), ``downsampled`` (channels sent down)."""
        full = self.padded_size(size) if size is not None else None
        rows = []
        for i, c in enumerate(self.core.widths):
            skip = self.core.skips[i] if i < self.scales - 1 else 0
            rows.append({
                "scale": i, "channels": c,
                "size": tuple(n // 2 ** i for n in full) if full is not None else None,
                "skip": skip, "downsampled": c - skip if skip else 0,
            })
        return rows

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the 1x1x1 convolutions, the couplings and the resampling operators."""
        def count(modules):
            return sum(p.numel() for m in modules for p in m.parameters())
        return {"convs_1x1x1": count([self.pre, self.post]),
                "couplings": count(self.core.sequences()),
                "resampling": count([*self.core.down, *self.core.up]),
                "total": count([self])}

    def describe(self, size: Sequence[int] | None = None) -> str:
        """A few lines on the architecture: channels and resolution at each scale for an input
        of ``size`` (D, H, W), and the parameter count."""
        rows = self.layout(size)
        saving = "on" if self.memory_saving else "off"
        lines = [f"iUNet3D: {self.in_channels} -> {self.out_channels} channels, channel blow-up "
                 f"{self.channels}, {self.scales} scales, {self.blocks_per_scale} coupling blocks "
                 f"per scale and side, memory saving {saving}"]
        if size is not None:
            padded = self.padded_size(size)
            note = (f" (padded to {shape_text(padded)}, a multiple of {self.core.multiple})"
                    if tuple(padded) != tuple(size) else "")
            lines.append(f"input {shape_text(size)}{note}")
            lines.append("scales: " + " -> ".join(f"{r['channels']}@{shape_text(r['size'])}"
                                                  for r in rows))
        lines.append("scale  channels  resolution        skip  downsampled")
        for r in rows:
            res = shape_text(r["size"]) if r["size"] is not None else f"1/{2 ** r['scale']}"
            skip = str(r["skip"]) if r["skip"] else "-"
            down = (f"{r['downsampled']} -> {2 * r['channels']}" if r["downsampled"] else "-")
            lines.append(f"{r['scale']:>5}  {r['channels']:>8}  {res:<16}  {skip:>4}  {down}")
        n = self.parameter_counts()
        lines.append(f"parameters: {n['total']:,} (couplings {n['couplings']:,}, resampling "
                     f"{n['resampling']:,}, 1x1x1 convolutions {n['convs_1x1x1']:,})")
        return "\n".join(lines)


@dataclass(frozen=True)
class IUNetSection(ModelSection):
    """``[model]`` of an iUNet preset (``width`` is the channel blow-up)."""

    scales: int = key(integer(1), 5, "iUNet: resolution levels")
    blocks_per_scale: int = key(integer(1), 2, "iUNet: coupling blocks per scale")


def _kwargs(model: IUNetSection, data: DataSection) -> dict[str, Any]:
    return {"in_channels": data.in_channels, "out_channels": data.out_channels,
            "channels": model.width, "scales": model.scales,
            "blocks_per_scale": model.blocks_per_scale, "memory_saving": model.memory_saving}


def _check(model: IUNetSection) -> None:
    if model.scales > 1 and model.width % SPLIT_FRACTION:
        raise InvalidKey("model.width", "an iUNet with several scales needs a multiple of 4 "
                         f"(a quarter is downsampled), got {model.width}")


def refuse_cpu_bf16_depth_two(model: IUNet3D, data: DataSection, train: TrainSection,
                              patch: Sequence[int], device: torch.device) -> None:
    """Raise ``ConfigError`` for bf16 training on the CPU when one of the iUNet's scales is 2
    voxels deep (first spatial axis). There PyTorch's CPU bf16 convolution (oneDNN, seen on
    PyTorch 2.13) returns wrong weight gradients for 3x3x3 kernels, of order 1e30, and
    training turns to NaN within a few steps; fp32, other depths and CUDA are not affected."""
    if device.type != "cpu" or train.precision != "bf16":
        return
    for row in model.layout(patch):
        if row["size"][0] == 2:
            least = 3 * model.core.multiple
            raise ConfigError(
                "key 'train.precision': bf16 training on the CPU with patch.size "
                f"{shape_text(patch)} puts iUNet scale {row['scale']} at "
                f"{shape_text(row['size'])}, 2 voxels deep, where PyTorch's CPU bf16 "
                "convolution returns wrong weight gradients; use fp32 (train.precision) on the "
                f"CPU, a patch at least {least} deep, or fewer model.scales", fix="precision")


FAMILY = register(ModelFamily(name="iunet3d", section=IUNetSection, network=IUNet3D,
                              kwargs=_kwargs, depth_key="blocks_per_scale", min_depth=1,
                              check=_check, patch_multiple=lambda m: 2 ** (m.scales - 1),
                              check_training=refuse_cpu_bf16_depth_two, tasks=("seg",)))
