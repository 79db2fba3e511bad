"""``--compile``: compiled plain parts around the eager memory-saving engine.

References are the same models run eagerly with the same weights. Every test also checks that
the parts really ran compiled (Dynamo made graphs, and none fell back to eager mode at its
recompile limit), so a silent no-op would fail.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch._dynamo.utils import counters

from revmed.runtime import check_compiler, compile_plain_parts, plain_parts
from revmed.errors import ConfigError
from revmed.models import IUNet3D, PatchDiscriminator3D, RevGAN3D


@pytest.fixture
def compiled_graphs(caplog):
    """``graphs()``: Dynamo graphs made since the test began; fails the test if any compiled
    part fell back to eager mode."""
    torch._dynamo.reset()  # one cache serves every test of the session: start empty
    start = counters["stats"]["unique_graphs"]
    caplog.set_level(logging.WARNING)
    yield lambda: counters["stats"]["unique_graphs"] - start
    fallbacks = [r.getMessage() for r in caplog.records if "recompile_limit" in r.getMessage()]
    assert not fallbacks, fallbacks[0]


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every parameter moved off its initial value (zero-initialised layers
    would make the core an identity and hide errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def _grads(model, loss):
    params = [p for p in model.parameters()]
    return torch.autograd.grad(loss, params, allow_unused=True)


def _assert_close(got, want, rtol=1e-4):
    """Gradients agree to ``rtol`` of the largest one (a convolution bias before instance
    norm has a gradient of pure rounding noise, so each is not held to its own scale)."""
    assert [g is None for g in got] == [w is None for w in want]
    pairs = [(g, w) for g, w in zip(got, want, strict=True) if w is not None]
    scale = max(w.abs().max() for _, w in pairs)
    worst = max((g - w).abs().max() for g, w in pairs)
    assert (worst / scale).item() < rtol


def test_plain_parts_are_the_sub_networks_around_the_engine():
    gan = RevGAN3D(width=8, depth=2)
    assert [name for name, _ in plain_parts(gan)] == [
        "enc_x", "dec_x", "enc_y", "dec_y",
        "core.blocks.0.f", "core.blocks.0.g", "core.blocks.1.f", "core.blocks.1.g"]
    unet = IUNet3D(in_channels=4, out_channels=3, channels=8, scales=2, blocks_per_scale=1)
    names = [name for name, _ in plain_parts(unet)]
    # pre and post, then F and G of each block at each scale on each side of the U
    assert names[0] == "pre" and names[-1] == "post" and len(names) == 2 + 2 * 2 * 2
    # the invertible blocks (couplings, orthogonal resampling) are never a plain part
    assert not any(name.endswith(("blocks.0", "blocks.1")) for name in names)
    critic = PatchDiscriminator3D(2, width=4, layers=2)
    assert plain_parts(critic) == [("", critic)]


def test_compiled_revgan_cycle_matches_eager(compiled_graphs):
    def build():
        torch.manual_seed(0)
        return _perturbed(RevGAN3D(width=8, depth=2))

    eager, compiled = build(), build()
    keys = list(compiled.state_dict())
    names = compile_plain_parts(compiled)
    assert len(names) == 8 and list(compiled.state_dict()) == keys  # checkpoints unchanged
    x = torch.randn(2, 1, 12, 12, 12)

    def cycle_loss(model):  # F, then G through the inverse core, in one graph
        y = model(x)
        return y.square().mean() + (model.reverse(torch.tanh(y)) - x).abs().mean(), y

    want_loss, want_y = cycle_loss(eager)
    got_loss, got_y = cycle_loss(compiled)
    torch.testing.assert_close(got_y, want_y, rtol=1e-4, atol=1e-5)
    _assert_close(_grads(compiled, got_loss), _grads(eager, want_loss))
    assert compiled_graphs() >= 4  # encoder, decoder and sub-network, with and without grad


def test_compiled_iunet_matches_eager(compiled_graphs):
    def build():
        torch.manual_seed(1)
        return _perturbed(IUNet3D(in_channels=2, out_channels=2, channels=8, scales=2,
                                  blocks_per_scale=2))

    eager, compiled = build(), build()
    compile_plain_parts(compiled)
    x = torch.randn(2, 2, 16, 16, 16)
    w = torch.linspace(-1, 1, 2 * 2 * 16 ** 3).reshape(2, 2, 16, 16, 16)
    want_loss = (eager(x) * w).sum()
    got_loss = (compiled(x) * w).sum()
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-4, atol=1e-4)
    _assert_close(_grads(compiled, got_loss), _grads(eager, want_loss))
    assert compiled_graphs() >= 2


def test_dropout_in_a_compiled_sub_network_is_replayed_exactly(make_sequence,
                                                               compiled_graphs):
    """The re-run in backward must draw the forward pass's dropout mask; with compiled
    sub-networks the memory-saving gradients still equal plain autograd's."""
    saving, naive = (make_sequence(2, dropout=0.3, dtype=torch.float32, memory_saving=m)
                     for m in (True, False))
    for sequence in (saving, naive):
        compile_plain_parts(sequence)
    x = torch.randn(2, 8, 6, 6, 6, requires_grad=True)
    grads = []
    for sequence in (saving, naive):
        torch.manual_seed(5)
        y = sequence(x)
        grads.append(torch.autograd.grad(y.square().sum(), [x, *sequence.parameters()]))
    _assert_close(grads[0], grads[1])
    assert compiled_graphs() >= 2


def test_compiling_twice_is_a_no_op():
    model = RevGAN3D(width=4, depth=1)
    assert len(compile_plain_parts(model)) == 6
    assert compile_plain_parts(model) == []


def test_a_machine_that_cannot_compile_gets_one_clear_error(monkeypatch):
    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\ndetails")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(ConfigError) as error:
        check_compiler(torch.device("cpu"))
    message = str(error.value)
    assert message.startswith("compile: ") and error.value.option == "compile"
    assert "CppCompileError" in message and "\n" not in message
