"""Additive coupling (NICE, Dinh et al. 2015; RevNet, Gomez et al. 2017).

With the channels of ``x`` split in two halves ``(x1, x2)``::

    y1 = x1 + F(x2)            x2 = y2 - G(y1)
    y2 = x2 + G(y1)            x1 = y1 - F(x2)          (inverse)

``F`` and ``G`` are arbitrary modules; the block is invertible whatever they compute.
"""

from __future__ import annotations

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
