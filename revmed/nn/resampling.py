"""Learnable invertible down- and upsampling (iUNets, Etmann et al. 2020, section 2).

For each input channel ``c`` a special orthogonal 8x8 *kernel matrix* ``A_c = exp(θ_c - θ_cᵀ)``
(the matrix exponential of a skew-symmetric matrix, Corollary 5) is reordered into eight
2x2x2 filters (row ``i`` of ``A_c`` becomes filter ``i``; entry ``4d + 2h + w`` sits at
``(d, h, w)``). A stride-2 convolution with these filters never lets two windows overlap, so it
is orthogonal (Theorem 4): the downsampling ``D_θ`` maps ``(B, C, D, H, W)`` to
``(B, 8C, D/2, H/2, W/2)`` and its inverse is its adjoint, the transposed convolution, which is
the learnable upsampling. Channels are treated independently (Corollary 6); output channels
``8c .. 8c + 7`` come from input channel ``c``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from revmed.nn.invertible import InvertibleModule


def haar_matrix(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The orthonormal 3D Haar matrix ``h ⊗ h ⊗ h``, ``h = [[1, 1], [1, -1]] / √2``; (8, 8).

    Row 0 is the approximation (average) filter, rows 1..7 the detail filters.
    """
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / math.sqrt(2.0)
    return torch.kron(torch.kron(h, h), h).to(dtype)


def haar_logarithm() -> torch.Tensor:
    """A skew-symmetric ``S`` with ``exp(S) = haar_matrix()``; (8, 8), float64.

    ``h`` is the reflection about the line at angle π/8, with eigenvectors
    ``u+ = (cos π/8, sin π/8)`` (eigenvalue 1) and ``u- = (-sin π/8, cos π/8)`` (eigenvalue -1).
    The Kronecker products with an odd number of ``u-`` factors span the 4-dimensional -1
    eigenspace of ``H = h ⊗ h ⊗ h``; rotating by π in two planes of that space is ``H``.
    """
    a = math.pi / 8
    plus = torch.tensor([math.cos(a), math.sin(a)], dtype=torch.float64)
    minus = torch.tensor([-math.sin(a), math.cos(a)], dtype=torch.float64)

    def kron3(p, q, r):
        return torch.kron(torch.kron(p, q), r)

    u1, u2, u3, u4 = (kron3(minus, plus, plus), kron3(plus, minus, plus),
                      kron3(plus, plus, minus), kron3(minus, minus, minus))
    return math.pi * (torch.outer(u1, u2) - torch.outer(u2, u1)
                      + torch.outer(u3, u4) - torch.outer(u4, u3))


class OrthogonalResampling3d(InvertibleModule):
    """Learnable orthogonal downsampling ``D_θ``; ``inverse`` is the upsampling ``D_θ*``.

    Args:
        channels: C, the input channels of the downsampling.
        init: ``"haar"`` (θ with ``exp(θ - θᵀ)`` the 3D Haar matrix: average and detail
            coefficients), ``"shuffle"`` (θ = 0, the identity matrix: pixel shuffle) or
            ``"random"`` (θ ~ N(0, 1), a random rotation per channel).

    ``forward``: (B, C, D, H, W) -> (B, 8C, D/2, H/2, W/2), D, H, W even.
    ``inverse``: (B, 8C, D', H', W') -> (B, C, 2D', 2H', 2W').

    The convolutions run outside autocast, in float32 (float64 for float64 input), so that
    mixed precision does not cost the operator its orthogonality; they are cheap (8
    multiply-adds per output value). From the Haar start the derivative of the matrix
    exponential is singular in a few directions (the eigenvalues ±iπ of θ - θᵀ differ by 2πi);
    the gradient has no component there and training moves θ along the others.
    """

    def __init__(self, channels: int, init: str = "haar") -> None:
        super().__init__()
        if init == "haar":
            theta = (haar_logarithm() / 2).expand(channels, 8, 8).clone()
        elif init == "shuffle":
            theta = torch.zeros(channels, 8, 8, dtype=torch.float64)
        elif init == "random":
            theta = torch.randn(channels, 8, 8, dtype=torch.float64)
        else:
            raise ValueError(f"unknown init {init!r}; expected 'haar', 'shuffle' or 'random'")
        self.channels = channels
        self.theta = torch.nn.Parameter(theta.to(torch.get_default_dtype()))

    def kernel_matrix(self) -> torch.Tensor:
        """``A_c = exp(θ_c - θ_cᵀ)``, special orthogonal; (C, 8, 8)."""
        return torch.linalg.matrix_exp(self.theta - self.theta.transpose(-1, -2))

    def weight(self) -> torch.Tensor:
        """The convolution kernel ``R·A``: (8C, 1, 2, 2, 2), grouped by input channel."""
        return self.kernel_matrix().reshape(8 * self.channels, 1, 2, 2, 2)

    def _conv(self, conv, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            return conv(x.to(dtype), self.weight().to(dtype), stride=2, groups=self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels or any(n % 2 for n in x.shape[2:]):
            raise ValueError(f"expected (B, {self.channels}, D, H, W) with even D, H, W; "
                             f"got {tuple(x.shape)}")
        return self._conv(F.conv3d, x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if y.shape[1] != 8 * self.channels:
            raise ValueError(f"expected (B, {8 * self.channels}, D, H, W); got {tuple(y.shape)}")
        return self._conv(F.conv_transpose3d, y)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
