"""``--channels-last``: 3D tensors in the channels-last (NDHWC) memory format.

A ``(B, C, D, H, W)`` tensor is normally stored with each channel's volume contiguous (NCDHW).
``torch.channels_last_3d`` stores the C values of each voxel together instead; the shape and
every value stay the same, only the strides change. Convolution libraries (oneDNN on CPU,
cuDNN on tensor-core GPUs) have faster kernels for that layout, so converting the weights
once and each batch on its way in can save the conversions those libraries would otherwise
make inside every convolution. Whether it does depends on the device and the layer sizes:
docs/benchmarks.md gives the measured step times.

The memory-saving engine works unchanged on channels-last tensors: channel halves are
strided views either way, and the in-place rebuild writes through them.
"""

from __future__ import annotations

import torch
from torch import nn

FORMAT = torch.channels_last_3d


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 5D parameters and buffers (convolution weights) in channels-last
    order, in place; returns it.

    A tensor already contiguous in that order is left alone, even when its strides differ
    from what ``module.to(memory_format=...)`` would give it: for a weight such as
    ``(1, C, 1, 1, 1)`` both orders hold the same bytes, and restriding it would only make
    its strides differ from those of its gradient, which DistributedDataParallel warns about.
    """
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.dim() == 5 and not tensor.is_contiguous(memory_format=FORMAT):
            tensor.data = tensor.data.contiguous(memory_format=FORMAT)
    return module


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last order when it is ``(B, C, D, H, W)``; other tensors unchanged."""
    return x.contiguous(memory_format=FORMAT) if x.dim() == 5 else x
