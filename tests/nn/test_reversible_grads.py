"""Memory-saving gradients equal plain autograd's (float64, relative error < 1e-6)."""

import pytest
import torch
from torch import nn

from revmed.nn import AdditiveCoupling, Inverted, OrthogonalResampling3d, ReversibleSequence

B, C, N = 2, 8, 6  # batch, channels, edge of the (N, N, N) volume


def weights(shape, dtype=torch.float64):
    """A fixed non-uniform weighting so that losses see every output element differently."""
    return torch.linspace(-1.0, 2.0, torch.Size(shape).numel(), dtype=dtype).reshape(shape)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_one_direction(make_sequence, grads_both_ways, assert_grads_close, direction):
    seq = make_sequence(3)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    w = weights(x.shape)
    run = seq if direction == "forward" else seq.inverse
    got, want = grads_both_ways(seq, lambda: (run(x) * w).square().mean(), [x])
    assert_grads_close(got, want)


def test_forward_then_inverse_in_one_graph(make_sequence, grads_both_ways, assert_grads_close):
    """The CycleGAN cycle: core forward, something in between, core inverse, shared weights."""
    seq = make_sequence(3)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    w = weights(x.shape)

    def step():
        y = seq(x)
        x_cycle = seq.inverse(torch.tanh(y) * 0.9 + 0.1)
        return (y * w).square().mean() + (x_cycle * w.flip(1)).abs().mean()

    got, want = grads_both_ways(seq, step, [x])
    assert_grads_close(got, want)


def test_input_without_grad_still_trains_parameters(make_sequence, grads_both_ways,
                                                    assert_grads_close):
    seq = make_sequence(2)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64)
    got, want = grads_both_ways(seq, lambda: seq(x).square().mean(), [x])
    assert got[0] is None and want[0] is None
    assert all(g is not None for g in got[1:])
    assert_grads_close(got, want)


def test_frozen_parameters_input_grad_only(make_sequence, grads_both_ways, assert_grads_close):
    seq = make_sequence(2).requires_grad_(False)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    got, want = grads_both_ways(seq, lambda: seq(x).square().mean(), [x])
    assert got[0] is not None and all(g is None for g in got[1:])
    assert_grads_close(got, want)


def test_partly_frozen_sub_network(make_sequence, grads_both_ways, assert_grads_close):
    seq = make_sequence(2)
    seq.blocks[0].g.requires_grad_(False)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    got, want = grads_both_ways(seq, lambda: seq(x).square().mean(), [x])
    assert_grads_close(got, want)


def test_parameters_used_outside_the_sequence(make_sequence, grads_both_ways, assert_grads_close):
    seq = make_sequence(2)
    shared = seq.blocks[1].f[0]  # a Conv3d inside the sequence, also applied outside it
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)

    def step():
        y = seq(x)
        return y.square().mean() + shared(y[:, : C // 2]).square().mean()

    got, want = grads_both_ways(seq, step, [x])
    assert_grads_close(got, want)


def test_block_used_twice(grads_both_ways, assert_grads_close, make_sequence):
    """One block at two places: its parameter gradients are the sum of both uses."""
    block = make_sequence(1).blocks[0]
    seq = ReversibleSequence([block, make_sequence(1, seed=1).blocks[0], block])
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    got, want = grads_both_ways(seq, lambda: seq(x).square().mean(), [x])
    assert_grads_close(got, want)


@pytest.mark.parametrize("norm", ["group", "instance", "layer"])
def test_normalisation_layers(make_sequence, grads_both_ways, assert_grads_close, norm):
    seq = make_sequence(2, norm=norm)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    got, want = grads_both_ways(seq, lambda: (seq(x) * weights(x.shape)).square().mean(), [x])
    assert_grads_close(got, want)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_dropout_is_replayed(make_sequence, grads_both_ways, assert_grads_close, direction):
    seq = make_sequence(3, dropout=0.3).train()
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    run = seq if direction == "forward" else seq.inverse
    got, want = grads_both_ways(seq, lambda: (run(x) * weights(x.shape)).square().mean(), [x])
    assert_grads_close(got, want)


def test_rng_stream_after_step_matches_plain_autograd(make_sequence):
    """Replaying dropout in backward leaves the caller's RNG exactly where autograd leaves it."""
    seq = make_sequence(2, dropout=0.3).train()
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    after = {}
    for memory_saving in (True, False):
        seq.memory_saving = memory_saving
        torch.manual_seed(7)
        seq(x).sum().backward()
        after[memory_saving] = torch.rand(4)
    assert torch.equal(after[True], after[False])


def test_without_rng_preservation_dropout_gradients_differ(make_sequence, grads_both_ways):
    """The check above is not vacuous: without replay the rebuilt forward draws new masks."""
    seq = make_sequence(2, dropout=0.3).train()
    seq.preserve_rng_state = False
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    got, want = grads_both_ways(seq, lambda: seq(x).square().mean(), [x])
    assert not torch.allclose(got[0], want[0])


def test_caller_tensors_are_left_alone(make_sequence):
    """Rebuilt activations and gradients are overwritten in place, the caller's never are."""
    seq = make_sequence(3)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    x_before = x.detach().clone()
    y = seq(x)
    y_before = y.detach().clone()
    grad = torch.randn_like(y)
    grad_before = grad.clone()
    y.backward(grad)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert torch.equal(grad, grad_before)


def test_retain_graph_second_backward(make_sequence):
    seq = make_sequence(3)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    loss = (seq(x) * weights(x.shape)).square().mean()
    first = torch.autograd.grad(loss, [x, *seq.parameters()], retain_graph=True)
    second = torch.autograd.grad(loss, [x, *seq.parameters()])
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_in_place_change_of_the_output_is_detected(make_sequence):
    seq = make_sequence(2)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    y = seq(x)
    loss = y.sum()
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_torch_autograd_grad(make_sequence):
    """Works with torch.autograd.grad, not only .backward() (memcnn refuses .grad())."""
    seq = make_sequence(2)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64, requires_grad=True)
    params = list(seq.parameters())
    results = {}
    for memory_saving in (True, False):
        seq.memory_saving = memory_saving
        results[memory_saving] = torch.autograd.grad(seq(x).square().mean(), [x, *params])
    for a, b in zip(results[True], results[False]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _mixed_sequence():
    torch.manual_seed(3)

    def conv(c):
        return nn.Sequential(nn.Conv3d(c, c, 3, padding=1), nn.Tanh(),
                             nn.Conv3d(c, c, 3, padding=1))

    blocks = [
        AdditiveCoupling(conv(2), conv(2)),
        OrthogonalResampling3d(4, init="random"),
        AdditiveCoupling(conv(16), conv(16)),
        Inverted(OrthogonalResampling3d(4, init="haar")),
        AdditiveCoupling(conv(2), conv(2)),
    ]
    return ReversibleSequence(blocks).double()


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_mixed_blocks(grads_both_ways, assert_grads_close, direction):
    seq = _mixed_sequence()
    x = torch.randn(B, 4, N, N, N, dtype=torch.float64, requires_grad=True)
    run = seq if direction == "forward" else seq.inverse
    got, want = grads_both_ways(seq, lambda: (run(x) * weights(x.shape)).square().mean(), [x])
    assert_grads_close(got, want)


def test_odd_channel_count(grads_both_ways, assert_grads_close):
    torch.manual_seed(0)
    f = nn.Conv3d(2, 3, 3, padding=1)  # x2 (2 channels) -> x1 (3 channels)
    g = nn.Conv3d(3, 2, 3, padding=1)
    seq = ReversibleSequence([AdditiveCoupling(f, g)]).double()
    x = torch.randn(B, 5, N, N, N, dtype=torch.float64, requires_grad=True)
    got, want = grads_both_ways(seq, lambda: (seq(x) * weights(x.shape)).square().mean(), [x])
    assert_grads_close(got, want)


def test_inference_builds_no_function(make_sequence):
    seq = make_sequence(2)
    x = torch.randn(B, C, N, N, N, dtype=torch.float64)
    with torch.no_grad():
        y = seq(x)
    assert y.grad_fn is None
    seq.requires_grad_(False)
    assert seq(x).grad_fn is None  # grad mode on, but nothing to differentiate
    seq.requires_grad_(True)
    y_train = seq(x)
    assert type(y_train.grad_fn).__name__ == "_BlockFunctionBackward"
    torch.testing.assert_close(y_train.detach(), y, rtol=0, atol=0)


def test_rejects_blocks_without_inverse():
    with pytest.raises(TypeError, match="not an InvertibleModule"):
        ReversibleSequence([nn.Conv3d(2, 2, 1)])


def test_depth_zero_is_identity():
    seq = ReversibleSequence([])
    x = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    assert seq(x) is x and seq.inverse(x) is x
