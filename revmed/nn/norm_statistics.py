"""Instance normalisation with its statistics fixed after training.

An ``nn.InstanceNorm3d`` normalises each channel by the mean and variance of whatever volume
it is given, so a network holding one computes a different function on every window of a
large volume: its output at a voxel depends on the window's size and position. Sliding-window
inference then needs heavy overlap and blending to hide the seams.

Here the statistics are measured once (``collect_norm_statistics``: the mean over a set of
inputs of each norm's per-instance channel means and variances, i.e. what the norm saw on
average) and frozen (``freeze_norms``: each norm becomes ``FixedNorm3d``, a per-channel
affine map). The network is then a stack of convolutions and point-wise maps, equivariant to
translation away from its borders, so a volume can be cut into tiles that overlap by the
network's reach only and give the same result as one pass over the whole volume.

Statistics are a ``{module name: (2, C) tensor}`` mapping: row 0 the means, row 1 the
variances, ``C`` the norm's channels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

Statistics = dict[str, torch.Tensor]


class FixedNorm3d(nn.Module):
    """``y = (x - mean) / sqrt(var + eps) * weight + bias`` with fixed per-channel numbers,
    folded into one scale and shift. ``(B, C, D, H, W) -> (B, C, D, H, W)``."""

    def __init__(self, norm: nn.InstanceNorm3d, statistics: torch.Tensor) -> None:
        super().__init__()
        mean, var = statistics.double()
        scale = torch.rsqrt(var + norm.eps)
        shift = -mean * scale
        if norm.affine:
            scale = scale * norm.weight.detach().double()
            shift = shift * norm.weight.detach().double() + norm.bias.detach().double()
        self.register_buffer("scale", scale.float().view(1, -1, 1, 1, 1))
        self.register_buffer("shift", shift.float().view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift.to(x.dtype), x, self.scale.to(x.dtype))


def instance_norms(module: nn.Module) -> dict[str, nn.InstanceNorm3d]:
    """The ``nn.InstanceNorm3d`` layers of ``module`` by their dotted names."""
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.InstanceNorm3d)}


class _Sums:
    """Running sums of each norm's per-instance channel means and variances."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, x: torch.Tensor) -> None:
        """Add the instances of ``x`` ``(B, C, D, H, W)``, the input of norm ``name``."""
        with torch.no_grad():
            var, mean = torch.var_mean(x.detach().float(), dim=(2, 3, 4), correction=0)
            total = torch.stack([mean.sum(0), var.sum(0)]).double()
        self.sums[name] = self.sums[name] + total if name in self.sums else total
        self.counts[name] = self.counts.get(name, 0) + x.shape[0]

    def means(self) -> Statistics:
        return {name: (total / self.counts[name]).float().cpu()
                for name, total in self.sums.items()}


def collect_norm_statistics(module: nn.Module, run: Callable[[torch.Tensor], torch.Tensor],
                            inputs: Iterable[torch.Tensor]) -> Statistics:
    """Mean per-instance channel statistics of every instance norm of ``module`` that
    ``run`` (a forward direction of ``module``) calls, over ``inputs``, each
    ``(B, C, D, H, W)``; norms ``run`` never calls are left out. No gradients; ``module``'s
    mode is left as it was."""
    sums = _Sums()
    handles = [norm.register_forward_pre_hook(lambda _m, args, name=name: sums.add(name, args[0]))
               for name, norm in instance_norms(module).items()]
    try:
        with torch.no_grad():
            for x in inputs:
                run(x)
    finally:
        for handle in handles:
            handle.remove()
    return sums.means()


def freeze_norms(module: nn.Module, statistics: Statistics) -> nn.Module:
    """A copy of ``module`` whose instance norms named in ``statistics`` are ``FixedNorm3d``
    layers with those statistics; ``ValueError`` when a statistic does not fit its norm."""
    frozen = copy.deepcopy(module)
    norms = instance_norms(frozen)
    # the module's device (norms without a scale and shift have no parameter to say it)
    device = next((p.device for p in frozen.parameters()), torch.device("cpu"))
    for name, stats in statistics.items():
        norm = norms.get(name)
        if (norm is None or not isinstance(stats, torch.Tensor)
                or tuple(stats.shape) != (2, norm.num_features)
                or not bool(torch.isfinite(stats).all()) or bool((stats[1] < 0).any())):
            raise ValueError(f"normalisation statistics {name!r} do not fit the network "
                             "(shape, or values not finite)")
        parent_name, _, child = name.rpartition(".")
        parent = frozen.get_submodule(parent_name) if parent_name else frozen
        setattr(parent, child, FixedNorm3d(norm, stats.to(device)))
    return frozen
