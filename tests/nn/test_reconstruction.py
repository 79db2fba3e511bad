"""inverse(forward(x)) == x, in fp32 and under bf16 autocast, and the invertibility helper."""

import pytest
import torch

from revmed.nn import ChannelSplit, invertibility_error


def test_depth_8_fp32_reconstruction(make_sequence):
    seq = make_sequence(8, dtype=torch.float32)
    x = torch.randn(2, 8, 8, 8, 8)
    assert invertibility_error(seq, x) < 1e-4


@pytest.mark.parametrize("memory_saving", [True, False])
def test_memory_saving_does_not_change_the_function(make_sequence, memory_saving):
    seq = make_sequence(4, dtype=torch.float32, memory_saving=memory_saving)
    x = torch.randn(2, 8, 8, 8, 8, requires_grad=True)
    with torch.no_grad():
        reference = seq(x)
    torch.testing.assert_close(seq(x), reference, rtol=0, atol=0)


def test_invertibility_error_restores_training_mode(make_sequence):
    seq = make_sequence(2, dropout=0.5, dtype=torch.float32).train()
    seq.blocks[0].f.eval()
    error = invertibility_error(seq, torch.randn(1, 8, 8, 8, 8))
    assert error < 1e-4  # evaluated with dropout off
    assert seq.training and seq.blocks[1].f.training and not seq.blocks[0].f.training


def test_invertibility_error_of_a_split():
    assert invertibility_error(ChannelSplit(3), torch.randn(1, 5, 2, 2, 2)) == 0.0


def test_bf16_autocast_on_cpu(make_sequence):
    """Forward and backward run under bf16 autocast, and the rebuilt activations cost no more
    accuracy than bf16 itself: measured against fp32 gradients, memory saving is about as far
    off as plain autograd under the same autocast."""
    seq = make_sequence(8, dtype=torch.float32)
    x = torch.randn(2, 8, 8, 8, 8, requires_grad=True)

    def grads(memory_saving, autocast):
        seq.memory_saving = memory_saving
        x.grad = None
        seq.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = seq(x)
            loss = y.float().square().mean()
        loss.backward()
        assert y.dtype == torch.float32  # the residual stream stays fp32; F and G run in bf16
        return [x.grad] + [p.grad for p in seq.parameters()]

    fp32, naive, saving = grads(False, False), grads(False, True), grads(True, True)
    for ref, a, b in zip(fp32, naive, saving):
        assert torch.isfinite(b).all()
        err_naive = ((a - ref).norm() / ref.norm()).item()
        err_saving = ((b - ref).norm() / ref.norm()).item()
        assert err_saving < 2 * err_naive + 0.02
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert invertibility_error(seq, x.detach()) < 0.1


def test_invertibility_error_mean_and_bad_reduction(make_sequence):
    seq = make_sequence(2, dtype=torch.float32)
    x = torch.randn(1, 8, 8, 8, 8)
    assert 0 <= invertibility_error(seq, x, "mean") <= invertibility_error(seq, x)
    with pytest.raises(ValueError):
        invertibility_error(seq, x, "sum")
