"""Invertible channel split and concatenation."""

import pytest
import torch

from revmed.nn import ChannelConcat, ChannelSplit, concat_channels, split_channels


def test_split_then_concat_is_identity():
    x = torch.randn(2, 5, 3, 4, 2)
    x1, x2 = ChannelSplit(2)(x)
    assert x1.shape == (2, 2, 3, 4, 2) and x2.shape == (2, 3, 3, 4, 2)
    assert torch.equal(ChannelSplit(2).inverse(x1, x2), x)


def test_concat_then_split_is_identity():
    a, b = torch.randn(1, 3, 2, 2, 2), torch.randn(1, 4, 2, 2, 2)
    y = ChannelConcat(3)(a, b)
    a2, b2 = ChannelConcat(3).inverse(y)
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_functions_and_gradients():
    x = torch.randn(1, 4, 2, 2, 2, requires_grad=True)
    x1, x2 = split_channels(x, 1)
    concat_channels(x2, x1).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_rejects_impossible_splits():
    with pytest.raises(ValueError):
        split_channels(torch.zeros(1, 4, 1, 1, 1), 4)
    with pytest.raises(ValueError):
        ChannelSplit(2).inverse(torch.zeros(1, 3, 1, 1, 1), torch.zeros(1, 1, 1, 1, 1))
