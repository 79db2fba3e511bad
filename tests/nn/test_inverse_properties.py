"""``inverse(forward(x)) == x`` on random shapes and widths, for coupling stacks and the iUNet
(random weights, so that neither is the identity), in float64."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from revmed.models import IUNet3D
from revmed.nn import AdditiveCoupling, ReversibleSequence

_sizes = st.tuples(*[st.integers(1, 6)] * 3)


def _randomise(module: nn.Module, seed: int, scale: float) -> nn.Module:
    """Add ``scale * N(0, 1)`` to every parameter, from a generator of its own."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _subnet(c: int) -> nn.Module:
    """(B, c, D, H, W) -> same: 3x3x3 conv, leaky ReLU, 1x1x1 conv."""
    return nn.Sequential(nn.Conv3d(c, c, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv3d(c, c, 1))


def _volume(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=25, deadline=None)
@given(channels=st.integers(1, 4).map(lambda n: 2 * n), depth=st.integers(1, 4), size=_sizes,
       batch=st.integers(1, 2), memory_saving=st.booleans(), grad=st.booleans(),
       seed=st.integers(0, 2**16))
def test_a_coupling_stack_inverts_its_forward(channels, depth, size, batch, memory_saving, grad,
                                              seed):
    half = channels // 2
    seq = ReversibleSequence([AdditiveCoupling(_subnet(half), _subnet(half)) for _ in range(depth)],
                             memory_saving=memory_saving).to(torch.float64)
    _randomise(seq, seed, scale=0.3)
    x = _volume((batch, channels, *size), seed + 1).requires_grad_(grad)
    y = seq(x)
    assert y.shape == x.shape
    assert (y - x).abs().max() > 1e-3  # not the identity
    torch.testing.assert_close(seq.inverse(y), x, atol=1e-10, rtol=0)
    torch.testing.assert_close(seq(seq.inverse(x)), x, atol=1e-10, rtol=0)


@settings(max_examples=12, deadline=None)
@given(scales=st.integers(1, 3), quarter=st.integers(1, 2), blocks=st.integers(1, 2),
       size=_sizes, batch=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_the_iunet_core_inverts_its_forward_on_any_padded_size(scales, quarter, blocks, size,
                                                                batch, seed):
    """Any input size: IUNet3D pads it to a multiple of 2**(scales - 1) for its core."""
    model = IUNet3D(1, 2, channels=4 * quarter, scales=scales, blocks_per_scale=blocks,
                    resampling_init="random").to(torch.float64)
    _randomise(model, seed, scale=0.1)  # couplings off the identity, D and U apart
    x = _volume((batch, 1, *size), seed + 1)
    assert model(x).shape == (batch, 2, *size)
    pads = model.padding(size)
    padded = F.pad(x, [p for pair in reversed(pads) for p in pair], mode="replicate")
    assert padded.shape[2:] == model.padded_size(size)
    assert all(n % 2 ** (scales - 1) == 0 for n in padded.shape[2:])
    h = model.pre(padded)
    y = model.core(h)
    assert (y - h).abs().max() > 1e-3  # not the identity
    torch.testing.assert_close(model.core.inverse(y), h, atol=1e-10, rtol=0)


@settings(max_examples=12, deadline=None)
@given(scales=st.integers(2, 3), size=_sizes, seed=st.integers(0, 2**16))
def test_padding_is_cropped_back_to_the_input_grid(scales, size, seed):
    """With the core at its identity initialisation the model is ``post(pre(x))`` voxel by voxel,
    so the padded and cropped forward must match it exactly, whatever the size."""
    model = IUNet3D(2, 3, channels=4, scales=scales, blocks_per_scale=1).to(torch.float64)
    _randomise(model.pre, seed, scale=0.5)
    _randomise(model.post, seed + 1, scale=0.5)
    x = _volume((1, 2, *size), seed + 2)
    torch.testing.assert_close(model(x), model.post(model.pre(x)), atol=1e-10, rtol=0)
