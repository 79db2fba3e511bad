"""The halves-apart coupling chain (``revmed.nn.coupling.run_couplings``) computes what the
blocks compute one by one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revmed.nn import AdditiveCoupling, ReversibleSequence
from revmed.nn.coupling import run_couplings

FORMATS = [torch.contiguous_format, torch.channels_last_3d]


def _chain(depth: int, channels: int = 6) -> ReversibleSequence:
    torch.manual_seed(3)

    def branch():
        return nn.Sequential(nn.Conv3d(channels // 2, channels // 2, 3, padding=1), nn.Tanh())
    return ReversibleSequence([AdditiveCoupling(branch(), branch()) for _ in range(depth)])


@pytest.mark.parametrize("memory_format", FORMATS)
@pytest.mark.parametrize("inverse", [False, True])
def test_the_halves_apart_chain_equals_the_blocks_one_by_one(memory_format, inverse):
    seq = _chain(3)
    x = torch.randn(2, 6, 7, 6, 5).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = x
        for block in (reversed(seq.blocks) if inverse else seq.blocks):
            expected = block.inverse(expected) if inverse else block(expected)
        got = run_couplings(seq.blocks, x, inverse)
        through_sequence = seq.inverse(x) if inverse else seq(x)
    assert torch.equal(got, expected)
    assert torch.equal(through_sequence, expected)
    assert got.is_contiguous(memory_format=memory_format)
    assert not torch.equal(got, x)


def test_the_chain_is_only_for_couplings():
    class Negate(AdditiveCoupling):
        pass
    seq = _chain(2)
    assert run_couplings(seq.blocks[:1], torch.randn(1, 6, 4, 4, 4)) is None
    odd = [seq.blocks[0], Negate(nn.Identity(), nn.Identity())]
    assert run_couplings(odd, torch.randn(1, 6, 4, 4, 4)) is None
