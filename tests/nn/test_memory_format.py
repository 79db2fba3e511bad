"""``--channels-last``: the memory-saving engine on channels-last weights and inputs.

The reference is plain autograd on the same weights in the default (NCDHW) layout, float64.
"""

from __future__ import annotations

import torch

from revmed.runtime import CHANNELS_LAST as FORMAT, as_channels_last, to_channels_last
from revmed.models import IUNet3D, RevGAN3D

B, C, N = 2, 8, 6


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=FORMAT) and not t.is_contiguous()


def test_conversions_change_strides_not_values():
    x = torch.randn(2, 3, 4, 5, 6)
    y = as_channels_last(x)
    assert _is_channels_last(y) and torch.equal(x, y)
    flat = torch.randn(3, 4)
    assert as_channels_last(flat) is flat
    model = RevGAN3D(width=4, depth=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    to_channels_last(model)
    assert _is_channels_last(model.core.blocks[0].f[1].weight)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_memory_saving_cycle_in_channels_last_matches_plain_autograd(make_sequence,
                                                                      assert_grads_close):
    """Forward and inverse in one graph (the CycleGAN cycle): the in-place rebuild writes
    through channel-half views of channels-last tensors."""
    reference = make_sequence(3, memory_saving=False)
    last = to_channels_last(make_sequence(3, memory_saving=True))
    x = torch.randn(B, C, N, N, N, dtype=torch.float64)
    w = torch.linspace(-1.0, 2.0, x.numel(), dtype=torch.float64).reshape(x.shape)
    grads, layouts = [], []
    for sequence, inputs in ((last, as_channels_last(x)), (reference, x)):
        inputs = inputs.clone().requires_grad_(True)
        y = sequence(inputs)
        layouts.append(_is_channels_last(y))
        back = sequence.inverse(torch.tanh(y) * 0.9 + 0.1)
        loss = (y * w).square().mean() + (back * w.flip(1)).abs().mean()
        grads.append(torch.autograd.grad(loss, [inputs, *sequence.parameters()]))
    assert layouts == [True, False]  # the layout really was channels-last throughout
    assert_grads_close(grads[0], grads[1])


def test_iunet_in_channels_last_matches_the_default_layout(assert_grads_close):
    def build():
        torch.manual_seed(3)
        model = IUNet3D(in_channels=2, out_channels=2, channels=8, scales=2,
                        blocks_per_scale=1).double()
        with torch.no_grad():  # off the identity start, so the core is exercised
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        return model

    reference, last = build(), to_channels_last(build())
    x = torch.randn(B, 2, 8, 8, 8, dtype=torch.float64)
    grads = []
    for model, inputs in ((last, as_channels_last(x)), (reference, x)):
        inputs = inputs.clone().requires_grad_(True)
        loss = model(inputs).square().mean()
        grads.append(torch.autograd.grad(loss, [inputs, *model.parameters()]))
    assert_grads_close(grads[0], grads[1])


def test_gradients_keep_the_strides_of_their_parameters():
    """DistributedDataParallel expects every gradient laid out like its parameter; a
    ``(1, C, 1, 1, 1)`` decoder weight, whose two layouts hold the same bytes, is left as it
    was, so its gradient matches it too."""
    model = to_channels_last(RevGAN3D(width=8, depth=1))
    assert model.dec_y.weight.stride() == (8, 1, 1, 1, 1)  # not restrided to (8, 1, 8, 8, 8)
    x = as_channels_last(torch.randn(2, 1, 8, 8, 8))
    (model(x).square().mean() + model.reverse(x).abs().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad.stride() == p.stride(), name
