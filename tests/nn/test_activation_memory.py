"""Activation memory is constant in depth with memory saving, linear without it.

Measured deterministically: bytes of the tensors autograd saves for backward (parameters
excluded), counted by SavedTensorMeter through torch.autograd.graph.saved_tensors_hooks.
"""

import pytest
import torch

from revmed.nn import SavedTensorMeter


def saved_bytes(seq, x, direction="forward"):
    with SavedTensorMeter(exclude=seq.parameters()) as meter:
        y = seq(x) if direction == "forward" else seq.inverse(x)
        y.square().mean()
    return meter.bytes


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("input_requires_grad", [False, True])
def test_constant_in_depth_with_memory_saving(make_sequence, direction, input_requires_grad):
    x = torch.randn(1, 8, 8, 8, 8, requires_grad=input_requires_grad)
    one = saved_bytes(make_sequence(1, dtype=torch.float32), x, direction)
    deep = saved_bytes(make_sequence(32, dtype=torch.float32), x, direction)
    assert one == deep == x.numel() * x.element_size()  # the output, saved once


def test_linear_in_depth_without_memory_saving(make_sequence):
    x = torch.randn(1, 8, 8, 8, 8)
    b = {d: saved_bytes(make_sequence(d, dtype=torch.float32, memory_saving=False), x)
         for d in (1, 2, 32)}
    per_block = b[2] - b[1]
    assert per_block > 2 * x.numel() * x.element_size()  # several activations per block
    assert b[32] - b[1] == 31 * per_block


def test_cycle_keeps_two_outputs(make_sequence):
    """Forward then inverse in one graph: two Functions, each saving only its output."""
    x = torch.randn(1, 8, 8, 8, 8)
    seq = make_sequence(16, dtype=torch.float32)
    with SavedTensorMeter(exclude=seq.parameters()) as meter:
        seq.inverse(seq(x) * 0.5)  # (* 0.5 saves no tensor: its other operand is a number)
    assert meter.bytes == 2 * x.numel() * x.element_size()
