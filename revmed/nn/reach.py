"""How far a stack of convolutions sees: the halo a tile needs for an exact result.

An output voxel of a chain of convolutions depends on the input voxels within ``reach`` of it
along each axis. A tile of a volume whose input reaches that far beyond the tile on every side
(clipped at the volume's faces, where the network's own padding applies as it would on the
whole volume) gives exactly the output of one pass over the whole volume there, provided the
network has no other dependence on the window (``revmed.nn.norm_statistics``).
"""

from __future__ import annotations

from fractions import Fraction

from torch import nn


def conv_reach(module: nn.Module, scale: Fraction = Fraction(1)) -> tuple[Fraction, Fraction]:
    """``(reach, scale)`` of the convolutions of ``module`` run in the order they were built
    (as ``nn.Sequential`` and the revmed blocks run them), entering at ``scale`` input voxels
    per module voxel: reach in input voxels (an upper bound), and the scale after them
    (strided convolutions multiply it, transposed ones divide it)."""
    reach = Fraction(0)
    for m in module.modules():
        if isinstance(m, nn.Conv3d | nn.ConvTranspose3d):
            kernel, dilation, stride = max(m.kernel_size), max(m.dilation), max(m.stride)
            if isinstance(m, nn.ConvTranspose3d):
                # output voxel o takes the inputs i with stride * i within (kernel - 1) / 2
                # output voxels of o (symmetric padding), at the output's (finer) scale
                scale /= stride
                reach += Fraction(dilation * (kernel - 1), 2) * scale
            else:
                reach += Fraction(dilation * (kernel - 1), 2) * scale
                scale *= stride
    return reach, scale
