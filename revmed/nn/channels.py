"""Invertible channel split and concatenation (iUNets, section 3).

Splitting ``(B, C, D, H, W)`` into ``(B, c1, ...)`` and ``(B, C - c1, ...)`` and concatenating
them back are each other's exact inverse. The split returns views of its input; the
concatenation allocates a new tensor.
"""

from __future__ import annotations

import torch
from torch import nn


def split_channels(x: torch.Tensor, c1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, ...) -> ((B, c1, ...), (B, C - c1, ...))``, as views of ``x``."""
    if not 0 < c1 < x.shape[1]:
        raise ValueError(f"cannot split {x.shape[1]} channels after channel {c1}")
    return x[:, :c1], x[:, c1:]


def concat_channels(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``((B, c1, ...), (B, c2, ...)) -> (B, c1 + c2, ...)``."""
    return torch.cat([x1, x2], dim=1)


class ChannelSplit(nn.Module):
    """Invertible split of the channel axis after channel ``c1``.

    ``forward``: ``(B, C, D, H, W) -> ((B, c1, D, H, W), (B, C - c1, D, H, W))``;
    ``inverse(x1, x2)`` concatenates them again.
    """

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_channels(x, self.c1)

    def inverse(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if x1.shape[1] != self.c1:
            raise ValueError(f"expected {self.c1} channels in the first part, got {x1.shape[1]}")
        return concat_channels(x1, x2)

    def extra_repr(self) -> str:
        return f"c1={self.c1}"


class ChannelConcat(nn.Module):
    """Invertible concatenation along channels; ``inverse`` splits after channel ``c1``.

    ``forward(x1, x2)``: ``((B, c1, ...), (B, c2, ...)) -> (B, c1 + c2, ...)``.
    """

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.c1 = c1

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if x1.shape[1] != self.c1:
            raise ValueError(f"expected {self.c1} channels in the first part, got {x1.shape[1]}")
        return concat_channels(x1, x2)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_channels(y, self.c1)

    def extra_repr(self) -> str:
        return f"c1={self.c1}"
