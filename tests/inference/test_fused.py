"""Fused inference convolutions (``revmed.inference.fused``) compute what the plain layers
compute: a conv with its folded norm and ReLU, the in-place add of a coupling's branch, and a
whole frozen RevGAN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revmed.inference.fused import FusedConv3d, FusedSequential, fuse_for_inference
from revmed.models.revgan import RevGAN3D
from revmed.nn.norm_statistics import FixedNorm3d, collect_norm_statistics, freeze_norms
from revmed.runtime import as_channels_last, onednn_supports, to_channels_last


FORMATS = [torch.contiguous_format, torch.channels_last_3d]


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one intra-op thread is faster, and steadier on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _frozen_norm(channels: int, seed: int = 0) -> FixedNorm3d:
    torch.manual_seed(seed)
    norm = nn.InstanceNorm3d(channels, affine=True)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.5)
        norm.bias.normal_(0.0, 0.5)
    stats = torch.stack([torch.randn(channels), torch.rand(channels) + 0.1])
    return FixedNorm3d(norm, stats)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # from switching oneDNN off
@pytest.mark.parametrize("memory_format", FORMATS)
@pytest.mark.parametrize("stride", [1, 2])
def test_a_folded_norm_and_relu_give_the_plain_layers_output(memory_format, stride):
    torch.manual_seed(1)
    conv, norm = nn.Conv3d(6, 10, 3, stride=stride), _frozen_norm(10)
    x = torch.randn(2, 6, 13, 12, 11).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = torch.relu(norm(conv(x)))
        fused = FusedConv3d(conv, norm, relu=True)
        got = fused(x)
        with torch.backends.mkldnn.flags(enabled=False):  # the plain-convolution fallback
            fallback = fused(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(fallback, expected, atol=1e-5)
    assert (got == 0).any() and (got > 0).any()  # the ReLU acted
    with torch.no_grad():
        assert not torch.allclose(FusedConv3d(conv, norm, relu=False)(x), expected, atol=1e-3)


@pytest.mark.parametrize("memory_format", FORMATS)
@pytest.mark.parametrize("sign", [1, -1])
def test_add_into_adds_the_convolution_in_place(memory_format, sign):
    torch.manual_seed(2)
    conv = nn.Conv3d(4, 4, 3)
    fused = FusedConv3d(conv)
    x = torch.randn(1, 4, 10, 9, 8).contiguous(memory_format=memory_format)
    total = torch.randn(1, 4, 8, 7, 6).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = total + sign * conv(x)
        out = fused.add_into(total, x, sign)
    assert out.data_ptr() == total.data_ptr()
    assert torch.allclose(out, expected, atol=1e-5)


def test_add_into_keeps_a_wider_sum_out_of_place():
    """A bfloat16 total and a float32 change: the sum is float32, as ``total + change``."""
    fused = FusedConv3d(nn.Conv3d(2, 2, 1))
    total = torch.randn(1, 2, 4, 4, 4).bfloat16()
    x = torch.randn(1, 2, 4, 4, 4)
    with torch.no_grad():
        out = fused.add_into(total, x)
        assert out.dtype == torch.float32
        assert torch.allclose(out, total.float() + fused(x), atol=1e-6)


def test_onednn_runs_float32_where_pytorch_has_it():
    assert onednn_supports(torch.float32) == torch.backends.mkldnn.is_available()


def _revgan(encoder: str, layers: str = "revmed") -> RevGAN3D:
    torch.manual_seed(4)
    net = RevGAN3D(1, 1, width=8, depth=2, encoder=encoder, residual=encoder != "strided",
                   layers=layers)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return net.eval()


@pytest.mark.parametrize("encoder,layers", [("srcnn-relu", "revmed"), ("srcnn", "authors"),
                                           ("strided", "revmed"), ("strided", "authors")])
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_fused_frozen_revgan_computes_the_frozen_one(encoder, layers, channels_last):
    net = _revgan(encoder, layers)
    x = torch.randn(1, 1, 18, 16, 14)
    for reverse in (False, True):
        run = net.reverse if reverse else net
        frozen = freeze_norms(net, collect_norm_statistics(net, run, [x]))
        fused = fuse_for_inference(freeze_norms(net, collect_norm_statistics(net, run, [x])))
        assert not any(isinstance(m, FixedNorm3d) for m in fused.core.modules())
        assert all(isinstance(b.f, FusedSequential) and isinstance(b.g, FusedSequential)
                   for b in fused.core.blocks)
        inp = x
        if channels_last:
            to_channels_last(fused)
            inp = as_channels_last(x)
        with torch.no_grad():
            expected = (frozen.reverse if reverse else frozen)(x)
            got = (fused.reverse if reverse else fused)(inp)
        assert torch.allclose(got, expected, atol=1e-4), (reverse, (got - expected).abs().max())
        assert expected.std() > 1e-2  # the network does something to compare


def test_fusing_leaves_sequentials_without_a_convolution_alone():
    seq = nn.Sequential(nn.ReLU(), nn.Tanh())
    holder = nn.Module()
    holder.seq = seq
    fuse_for_inference(holder)
    assert holder.seq is seq
