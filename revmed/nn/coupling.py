"""Additive coupling (NICE, Dinh et al. 2015; RevNet, Gomez et al. 2017).

With the channels of ``x`` split in two halves ``(x1, x2)``::

    y1 = x1 + F(x2)            x2 = y2 - G(y1)
    y2 = x2 + G(y1)            x1 = y1 - F(x2)          (inverse)

``F`` and ``G`` are arbitrary modules; the block is invertible whatever they compute.

Without a graph (inference), ``run_couplings`` runs a chain of couplings on the two halves
kept apart: each half is copied once into its own contiguous tensor, the blocks add into them
in place, and they are joined once at the end. Joining and splitting between blocks costs
little in the contiguous (NCDHW) order, where a channel half is one piece of memory; in the
channels-last order, where each voxel's channels are interleaved, adding into a half is a
strided copy and took 17% of a chest-CT tile's time (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from revmed.nn import replay
from revmed.nn.channels import concat_channels, split_channels
from revmed.nn.invertible import InvertibleModule, trainable, vjp


class AdditiveCoupling(InvertibleModule):
    """Additive coupling block ``y = (x1 + F(x2), x2 + G(y1))``.

    Args:
        f: ``F``, maps ``x2`` (B, C//2, D, H, W) to the shape of ``x1`` (B, C - C//2, D, H, W).
        g: ``G``, maps ``y1`` (B, C - C//2, D, H, W) to the shape of ``x2`` (B, C//2, D, H, W).

    The first half gets the extra channel when C is odd. Input and output are (B, C, D, H, W).
    """

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f = f
        self.g = g

    @staticmethod
    def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_channels(t, t.shape[1] - t.shape[1] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self._halves(x)
        y1 = x1 + replay.call(self.f, x2)
        y2 = x2 + replay.call(self.g, y1)
        return concat_channels(y1, y2)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = self._halves(y)
        x2 = y2 - replay.call(self.g, y1)
        x1 = y1 - replay.call(self.f, x2)
        return concat_channels(x1, x2)

    # The fused backward steps. Each evaluates G and F once, with a graph: that one evaluation
    # both rebuilds the missing half of the input and is differentiated, then its graph is
    # dropped before the other sub-network runs. Tape indices follow the order of the calls in
    # forward (F is call 0, G call 1) and in inverse (G is call 0, F call 1). With in_place the
    # rebuilt input and its gradient overwrite the output and its gradient: no allocation.

    def backward_pass(self, y, grad_y, tape=None, in_place=False):
        """Backward step of ``forward``.

        With ``(gy1, gy2) = dL/dy``: ``G(y1)`` gives ``x2 = y2 - G(y1)`` and
        ``dL/dx1 = gy1 + (dG/dy1)^T gy2``; then ``F(x2)`` gives ``x1 = y1 - F(x2)`` and
        ``dL/dx2 = gy2 + (dF/dx2)^T dL/dx1``.
        """
        x, grad_x = (y, grad_y) if in_place else (torch.empty_like(y), torch.empty_like(grad_y))
        (y1, y2), (gy1, gy2) = self._halves(y), self._halves(grad_y)
        (x1, x2), (gx1, gx2) = self._halves(x), self._halves(grad_x)
        g_y1, g_back, g_grads = vjp(self.g, y1, gy2, trainable(self.g), tape, 1)
        torch.sub(y2, g_y1.to(y.dtype), out=x2)
        torch.add(gy1, g_back, out=gx1)
        del g_y1, g_back
        f_x2, f_back, f_grads = vjp(self.f, x2, gx1, trainable(self.f), tape, 0)
        torch.sub(y1, f_x2.to(y.dtype), out=x1)
        torch.add(gy2, f_back, out=gx2)
        return x, grad_x, f_grads + g_grads

    def inverse_backward_pass(self, x, grad_x, tape=None, in_place=False):
        """Backward step of ``inverse``.

        With ``(gx1, gx2) = dL/dx``: ``F(x2)`` gives ``y1 = x1 + F(x2)`` and
        ``dL/dy2 = gx2 - (dF/dx2)^T gx1``; then ``G(y1)`` gives ``y2 = x2 + G(y1)`` and
        ``dL/dy1 = gx1 - (dG/dy1)^T dL/dy2``. Parameter gradients carry the minus sign too.
        """
        y, grad_y = (x, grad_x) if in_place else (torch.empty_like(x), torch.empty_like(grad_x))
        (x1, x2), (gx1, gx2) = self._halves(x), self._halves(grad_x)
        (y1, y2), (gy1, gy2) = self._halves(y), self._halves(grad_y)
        f_x2, f_back, f_grads = vjp(self.f, x2, gx1, trainable(self.f), tape, 1)
        torch.add(x1, f_x2.to(x.dtype), out=y1)
        torch.sub(gx2, f_back, out=gy2)
        del f_x2, f_back
        g_y1, g_back, g_grads = vjp(self.g, y1, gy2, trainable(self.g), tape, 0)
        torch.add(x2, g_y1.to(x.dtype), out=y2)
        torch.sub(gx1, g_back, out=gy1)
        return y, grad_y, [(p, -g) for p, g in f_grads + g_grads]


def run_couplings(blocks: Sequence[InvertibleModule], x: torch.Tensor,
                  inverse: bool = False) -> torch.Tensor | None:
    """``blocks`` applied in order to ``x`` (each one's ``inverse``, in reverse order, with
    ``inverse``), their halves kept apart in between; the same values as calling the blocks one
    by one. For inference: call it without a graph. Returns None, having done nothing, unless
    every block is an ``AdditiveCoupling`` and there are at least two.

    ``x`` is ``(B, C, D, H, W)``; the result is a new tensor of the same shape and memory order.
    """
    if len(blocks) < 2 or not all(type(b) is AdditiveCoupling for b in blocks):
        return None
    order = (torch.channels_last_3d if x.dim() == 5 and not x.is_contiguous()
             and x.is_contiguous(memory_format=torch.channels_last_3d)
             else torch.contiguous_format)
    first, second = (half.clone(memory_format=order) for half in AdditiveCoupling._halves(x))
    for block in (reversed(blocks) if inverse else blocks):
        if inverse:
            second = _add_branch(second, block.g, first, -1)
            first = _add_branch(first, block.f, second, -1)
        else:
            first = _add_branch(first, block.f, second, 1)
            second = _add_branch(second, block.g, first, 1)
    return concat_channels(first, second)


def _add_branch(half: torch.Tensor, branch: nn.Module, x: torch.Tensor,
                sign: int) -> torch.Tensor:
    """``half + sign * branch(x)``, into ``half`` where it can: through the branch's own
    ``add_into`` when it has one (sub-networks fused for inference do:
    ``revmed.inference.fused``), else ``add_change``."""
    add_into = getattr(branch, "add_into", None)
    if add_into is not None:
        return replay.call(lambda t: add_into(half, t, sign), x)
    return add_change(half, replay.call(branch, x), sign)


def add_change(total: torch.Tensor, change: torch.Tensor, sign: int) -> torch.Tensor:
    """``total + sign * change``, in place when that keeps ``total``'s dtype (as the
    out-of-place sum would have it), else a new tensor."""
    if torch.promote_types(total.dtype, change.dtype) != total.dtype:
        return total + change if sign > 0 else total - change
    return total.add_(change) if sign > 0 else total.sub_(change)
