"""Convolutions fused with the point-wise maps around them, for inference on the CPU.

A network with frozen norms (``revmed.nn.norm_statistics``) is convolutions and point-wise
maps. On a large tile each point-wise map (a frozen norm's scale and shift, a ReLU, a
coupling's addition) is one more pass over a feature map far larger than the cache: on the
2-core CPU the fused network ran a chest CT's tiles 1.5x as fast as the same network unfused,
both channels-last (docs/benchmarks.md, "Whole-volume inference"). ``fuse_for_inference``
removes them:

* a frozen norm right after a convolution is folded into it (weights and bias scaled per output
  channel; the same map up to float rounding);
* a frozen norm right before a convolution, with only replication padding between them (the
  authors' strided coupling branches start so), is folded into it too (weights scaled per input
  channel, the shift summed into the bias: padding by replication commutes with a per-channel
  map, where zero padding would not);
* a ReLU right after a convolution (or its folded norm) runs inside the convolution, as a
  oneDNN post-op;
* a coupling's sub-network that ends in a convolution adds that convolution's output into its
  half of the features in place (``FusedConv3d.add_into``, a oneDNN binary add post-op), where
  ``revmed.nn.coupling.run_couplings`` would otherwise add it in a separate pass.

The fused operators are PyTorch's own oneDNN ones (``torch.ops.mkldnn._convolution_pointwise``,
what ``torch.compile`` emits for the same fusions on the CPU). They are used where they run: on
the CPU, with oneDNN enabled, for a dtype the processor supports (checked once per dtype with a
small call, ``revmed.runtime.onednn_supports``); elsewhere, on CUDA and under other autocast
dtypes, ``FusedConv3d`` runs the plain convolution with the same folded weights.
``torch.compile`` itself is not used for this: it compiles for 20-60 s per process
(docs/benchmarks.md, "Compiled sub-networks") and again for each tile shape, longer than the
inference it would speed up.

Only for inference: the fused network has buffers, not parameters, and no gradient path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from revmed.nn.coupling import add_change
from revmed.nn.norm_statistics import FixedNorm3d
from revmed.runtime import onednn_supports


class FusedConv3d(nn.Module):
    """A ``Conv3d`` with an optional per-channel scale and shift (a folded ``FixedNorm3d``)
    and an optional ReLU after it. ``(B, C_in, D, H, W) -> (B, C_out, D', H', W')`` as the
    convolution maps it.

    Args:
        conv: the convolution (zero padding mode; revmed pads by replication in a layer before).
        norm: a frozen norm applied to the convolution's output, folded into its weights.
        relu: apply a ReLU to the result.
        channels_last: the network runs in channels-last order (``revmed.runtime``): inputs
            are given channels-last strides, so the output keeps that order.
    """

    def __init__(self, conv: nn.Conv3d, norm: FixedNorm3d | None = None, relu: bool = False,
                 channels_last: bool = False) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("FusedConv3d needs a convolution with numeric zero padding")
        weight = conv.weight.detach().double()
        bias = (conv.bias.detach().double() if conv.bias is not None
                else weight.new_zeros(weight.shape[0]))
        if norm is not None:
            scale, shift = norm.scale.double().flatten(), norm.shift.double().flatten()
            weight = weight * scale.view(-1, 1, 1, 1, 1)
            bias = bias * scale + shift
        memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.register_buffer("weight", weight.float().contiguous(memory_format=memory_format))
        self.register_buffer("bias", bias.float())
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu, self.channels_last = relu, channels_last
        self._cast: dict[tuple[torch.dtype, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _weights(self, dtype: torch.dtype, sign: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias in ``dtype``, negated for ``sign`` -1 (kept after the first use)."""
        found = self._cast.get((dtype, sign))
        if found is None or found[0].device != self.weight.device:
            weight, bias = self.weight, self.bias
            if sign < 0:
                weight, bias = -weight, -bias
            found = (weight.to(dtype), bias.to(dtype))
            self._cast[(dtype, sign)] = found
        return found

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), ...: drop the cached copies
        self._cast = {}
        return super()._apply(fn, recurse)

    def _dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype the convolution runs in: autocast's on the tensor's device, else ``x``'s."""
        device = x.device.type
        if torch.is_autocast_enabled(device):
            return torch.get_autocast_dtype(device)
        return x.dtype

    def _fused(self, x: torch.Tensor, dtype: torch.dtype) -> bool:
        return (x.device.type == "cpu" and torch.backends.mkldnn.enabled
                and onednn_supports(dtype))

    def _input(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``x`` in ``dtype``; with ``channels_last``, also with channels-last strides, which
        oneDNN goes by to give its output that order. Only a one-channel tensor (counted as
        contiguous in both orders) may lack them: restriding it copies one channel."""
        x = x.to(dtype)
        if self.channels_last and x.stride(1) != 1:
            x = x.clone(memory_format=torch.channels_last_3d)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype(x)
        if self._fused(x, dtype):
            weight, bias = self._weights(dtype, 1)
            return torch.ops.mkldnn._convolution_pointwise(
                self._input(x, dtype), weight, bias, self.padding, self.stride, self.dilation,
                self.groups, "relu" if self.relu else "none", [], None)
        y = F.conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        return torch.relu_(y) if self.relu else y

    def add_into(self, total: torch.Tensor, x: torch.Tensor, sign: int = 1) -> torch.Tensor:
        """``total + sign * self(x)``, written into ``total`` when the sum keeps its dtype (as
        an out-of-place sum would have it), else a new tensor; returns the sum. ``total`` has
        the shape of ``self(x)``."""
        if self.relu:
            raise ValueError("add_into needs a convolution without a ReLU")
        dtype = self._dtype(x)
        if self._fused(x, dtype) and total.dtype == dtype and total.shape[1] == self.weight.shape[0]:
            weight, bias = self._weights(dtype, sign)
            return torch.ops.mkldnn._convolution_pointwise_.binary(
                total, self._input(x, dtype), weight, bias, self.padding, self.stride, self.dilation,
                self.groups, "add", 1.0, None, [], None)
        return add_change(total, self(x), sign)

    def extra_repr(self) -> str:
        shape = "x".join(map(str, self.weight.shape))
        return f"weight={shape}, stride={self.stride}, relu={self.relu}"


class FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` whose last layer is a ``FusedConv3d``: ``add_into(total, x,
    sign)`` runs the layers before it, then adds its output into ``total``."""

    def add_into(self, total: torch.Tensor, x: torch.Tensor, sign: int = 1) -> torch.Tensor:
        for layer in list(self)[:-1]:
            x = layer(x)
        return self[-1].add_into(total, x, sign)


def fuse_for_inference(module: nn.Module, channels_last: bool = False) -> nn.Module:
    """``module`` with every ``Conv3d`` in an ``nn.Sequential`` replaced by a ``FusedConv3d``
    that takes in a ``FixedNorm3d`` and a ``ReLU`` right after it (in place; returns it), for
    a network run in channels-last order with ``channels_last`` (its inputs too: put the rest
    of ``module`` in that order with ``revmed.runtime.to_channels_last``). Sequentials ending
    in a convolution become ``FusedSequential``. The same map up to float rounding; for
    inference only (the fused layers hold no parameters)."""
    for name, child in list(module.named_children()):
        fuse_for_inference(child, channels_last)
        if isinstance(child, nn.Sequential) and not isinstance(child, FusedSequential):
            fused = _fuse_layers(list(child), channels_last)
            if fused is not None:
                setattr(module, name, fused)
    return module


def _fold_before(norm: FixedNorm3d, conv: nn.Conv3d) -> nn.Conv3d:
    """A convolution computing ``conv(norm(x))`` for a convolution without zero padding."""
    scale = norm.scale.detach().double().view(1, -1, 1, 1, 1)
    shift = norm.shift.detach().double().view(-1)
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(len(weight))
    folded = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                       0, conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    with torch.no_grad():
        folded.weight.copy_((weight * scale).to(conv.weight.dtype))
        folded.bias.copy_((bias + torch.einsum("oi...,i->o", weight, shift))
                          .to(conv.weight.dtype))
    return folded


def _fold_leading_norms(layers: list[nn.Module]) -> list[nn.Module]:
    """``layers`` with each frozen norm that is followed by replication padding and an
    unpadded convolution folded into that convolution."""
    out, i = [], 0
    while i < len(layers):
        if (i + 2 < len(layers) and isinstance(layers[i], FixedNorm3d)
                and type(layers[i + 1]) is nn.ReplicationPad3d
                and type(layers[i + 2]) is nn.Conv3d and not isinstance(layers[i + 2].padding, str)
                and not any(layers[i + 2].padding)):
            out += [layers[i + 1], _fold_before(layers[i], layers[i + 2])]
            i += 3
        else:
            out.append(layers[i])
            i += 1
    return out


def _fuse_layers(layers: list[nn.Module], channels_last: bool) -> nn.Sequential | None:
    """The fused layers of one Sequential, or None when it has no convolution to fuse."""
    layers = _fold_leading_norms(layers)
    out: list[nn.Module] = []
    i, changed = 0, False
    while i < len(layers):
        layer = layers[i]
        if type(layer) is nn.Conv3d and layer.padding_mode == "zeros" \
                and not isinstance(layer.padding, str):
            norm = layers[i + 1] if i + 1 < len(layers) and isinstance(
                layers[i + 1], FixedNorm3d) else None
            after = i + 1 + (norm is not None)
            relu = after < len(layers) and type(layers[after]) is nn.ReLU
            out.append(FusedConv3d(layer, norm, relu, channels_last))
            i, changed = after + relu, True
        else:
            out.append(layer)
            i += 1
    if not changed:
        return None
    kind = FusedSequential if isinstance(out[-1], FusedConv3d) and not out[-1].relu \
        else nn.Sequential
    return kind(*out)
