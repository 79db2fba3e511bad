"""Shared builders for the revmed.nn tests: tiny 3D couplings and a gradient comparison."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revmed.nn import AdditiveCoupling, ReversibleSequence


def subnet(c: int, norm: str = "group", dropout: float = 0.0) -> nn.Module:
    """Conv3d -> norm -> ReLU [-> Dropout3d] -> Conv3d on c channels, (B, c, D, H, W) -> same."""
    norms = {
        "group": lambda: nn.GroupNorm(2, c),
        "instance": lambda: nn.InstanceNorm3d(c, affine=True),
        "layer": lambda: nn.GroupNorm(1, c),  # LayerNorm over (C, D, H, W)
        "none": nn.Identity,
    }
    layers = [nn.Conv3d(c, c, 3, padding=1), norms[norm](), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout3d(dropout))
    layers.append(nn.Conv3d(c, c, 3, padding=1))
    return nn.Sequential(*layers)


@pytest.fixture
def make_sequence():
    """``make_sequence(depth, channels=8, norm="group", dropout=0.0, dtype=torch.float64)``."""

    def make(depth, channels=8, norm="group", dropout=0.0, dtype=torch.float64, seed=0,
             memory_saving=True):
        torch.manual_seed(seed)
        half = channels // 2
        blocks = [AdditiveCoupling(subnet(half, norm, dropout), subnet(half, norm, dropout))
                  for _ in range(depth)]
        return ReversibleSequence(blocks, memory_saving=memory_saving).to(dtype)

    return make


@pytest.fixture
def grads_both_ways():
    """``grads_both_ways(seq, step, inputs)`` runs ``step()`` (which returns a loss) with
    ``seq.memory_saving`` True and False from the same seed and returns both gradient lists:
    the ``inputs`` (tensors; None where no gradient) followed by every parameter of ``seq``."""

    def run(seq, step, inputs, params=None):
        params = list(seq.parameters()) if params is None else params
        out = {}
        for memory_saving in (True, False):
            seq.memory_saving = memory_saving
            for t in [*inputs, *params]:
                t.grad = None
            torch.manual_seed(1234)
            step().backward()
            out[memory_saving] = [None if t.grad is None else t.grad.clone()
                                  for t in [*inputs, *params]]
        return out[True], out[False]

    return run


@pytest.fixture
def assert_grads_close():
    """Relative error per tensor, max|a - b| / max|b|, below ``tol``; None must match None.

    Gradients that vanish in exact arithmetic (a conv bias followed by instance norm) are
    rounding noise of order 1e-17 in float64; below ``atol`` they are compared absolutely."""

    def check(got, want, tol=1e-6, atol=1e-12):
        assert len(got) == len(want)
        for i, (a, b) in enumerate(zip(got, want)):
            assert (a is None) == (b is None), f"gradient {i}: {a is None=} {b is None=}"
            if a is None:
                continue
            scale = b.abs().max().clamp_min(atol / tol)
            err = ((a - b).abs().max() / scale).item()
            assert err < tol, f"gradient {i}: relative error {err:.3g}"

    return check


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and steadier on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
