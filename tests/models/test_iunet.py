"""IUNet3D: channel layout, identity at initialisation, invertibility, padding, activation
memory and memory-saving gradients, registry and describe()."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from revmed import config
from revmed.models import FAMILIES, IUNet3D, IUNetCore, build_model, model_spec
from revmed.nn import ReversibleSequence, SavedTensorMeter, invertibility_error


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and steadier on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _volume(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _perturb(module, scale=0.1, seed=0):
    """Move every parameter away from its initial value (couplings off the identity, D and U
    off the Haar matrix and apart from each other), as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def test_channels_double_and_resolution_halves_between_scales():
    model = IUNet3D(2, 3, channels=8, scales=4, blocks_per_scale=1)
    assert model.core.widths == [8, 16, 32, 64]
    assert model.core.skips == [6, 12, 24]  # 3/4 kept; 1/4 downsampled to 8x: channels double
    seen = {}
    for side in ("left", "right"):
        for i, seq in enumerate(getattr(model.core, side)):
            seq.register_forward_hook(
                lambda mod, inp, out, key=(side, i): seen.__setitem__(key, tuple(out.shape)))
    assert model(_volume(1, 2, 32, 16, 24)).shape == (1, 3, 32, 16, 24)
    for i, c in enumerate(model.core.widths):
        shape = (1, c, 32 >> i, 16 >> i, 24 >> i)
        assert seen["left", i] == seen["right", i] == shape
    rows = model.layout((32, 16, 24))
    assert [(r["channels"], r["size"], r["skip"], r["downsampled"]) for r in rows] == [
        (8, (32, 16, 24), 6, 2), (16, (16, 8, 12), 12, 4), (32, (8, 4, 6), 24, 8),
        (64, (4, 2, 3), 0, 0)]


def test_invalid_channel_counts_are_rejected():
    with pytest.raises(ValueError, match="multiple of 4"):
        IUNetCore(6, scales=2)
    with pytest.raises(ValueError, match="at least 2"):
        IUNetCore(1, scales=1)
    with pytest.raises(ValueError, match="scales"):
        IUNetCore(8, scales=0)
    with pytest.raises(ValueError, match="multiple of 4 per axis"):
        IUNetCore(4, scales=3)(_volume(1, 4, 8, 8, 6))
    odd = _perturb(IUNetCore(3, scales=1, blocks_per_scale=2).double())  # no split: any C >= 2
    h = _volume(1, 3, 5, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(odd.inverse(odd(h)), h, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_core_starts_as_the_identity(dtype, atol):
    core = IUNetCore(8, scales=3, blocks_per_scale=2).to(dtype)
    h = _volume(2, 8, 16, 8, 12, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(core(h), h, atol=atol, rtol=0)
        torch.testing.assert_close(core.inverse(h), h, atol=atol, rtol=0)


@pytest.mark.parametrize("size", [(16, 16, 16), (20, 18, 22)])
def test_model_starts_as_the_two_pointwise_convolutions(size):
    """Replication padding commutes with 1x1x1 convolutions, so the padded size gives the
    same identity; the output is cropped back to the input size."""
    model = IUNet3D(4, 3, channels=8, scales=3, blocks_per_scale=2).double()
    x = _volume(2, 4, *size, dtype=torch.float64)
    direct = F.conv3d(F.conv3d(x, model.pre.weight, model.pre.bias),
                      model.post.weight, model.post.bias)
    with torch.no_grad():
        torch.testing.assert_close(model(x), direct, atol=1e-12, rtol=0)


def test_outputs_start_at_the_prior_probability():
    """The logits' bias starts at logit(prior): the untrained network calls every region rare
    (as it is) instead of even, whatever the input."""
    torch.manual_seed(0)
    model = IUNet3D(4, 3, channels=8, scales=3, blocks_per_scale=1)
    with torch.no_grad():
        p = torch.sigmoid(model(_volume(2, 4, 16, 16, 16)))
    assert abs(float(p.median()) - 0.01) < 0.01
    with torch.no_grad():
        even = torch.sigmoid(IUNet3D(4, 3, channels=8, scales=3, prior=0.5)(_volume(2, 4, 16, 16, 16)))
    assert abs(float(even.median()) - 0.5) < 0.1
    with pytest.raises(ValueError, match="prior"):
        IUNet3D(4, 3, channels=8, scales=3, prior=1.0)


def test_core_is_invertible_away_from_the_initialisation():
    core = _perturb(IUNetCore(8, scales=3, blocks_per_scale=2).double())
    assert {id(p) for p in core.down.parameters()}.isdisjoint(
        id(p) for p in core.up.parameters())  # U_i has its own parameters
    h = _volume(1, 8, 16, 12, 8, dtype=torch.float64)
    with torch.no_grad():
        y = core(h)
        assert (y - h).abs().max() > 0.1
        torch.testing.assert_close(core.inverse(y), h, atol=1e-10, rtol=0)
        torch.testing.assert_close(core(core.inverse(h)), h, atol=1e-10, rtol=0)
    core32 = core.float()
    assert invertibility_error(core32, h.float()) < 1e-4


def test_inputs_of_any_size_are_padded_by_replication_and_cropped_back():
    model = _perturb(IUNet3D(1, 2, channels=4, scales=3, blocks_per_scale=1).double())
    x = _volume(1, 1, 20, 18, 22, dtype=torch.float64)
    assert model.padding((20, 18, 22)) == [(0, 0), (1, 1), (1, 1)]
    assert model.padded_size((20, 18, 22)) == (20, 20, 24)
    with torch.no_grad():
        y = model(x)
        padded = F.pad(x, (1, 1, 1, 1, 0, 0), mode="replicate")
        want = model.post(model.core(model.pre(padded)))[..., 1:19, 1:23]
    assert y.shape == (1, 2, 20, 18, 22)
    torch.testing.assert_close(y, want, atol=1e-12, rtol=0)


def _saved_bytes(blocks, memory_saving, size=16):
    torch.manual_seed(0)
    model = IUNet3D(1, 2, channels=4, scales=3, blocks_per_scale=blocks,
                    memory_saving=memory_saving)
    x = _volume(1, 1, size, size, size)
    with SavedTensorMeter(exclude=model.parameters()) as meter:
        model(x).square().mean()
    return meter.bytes


def test_activation_memory_does_not_grow_with_blocks_per_scale():
    saving = {b: _saved_bytes(b, True) for b in (1, 4)}
    plain = {b: _saved_bytes(b, False) for b in (1, 2, 4)}
    assert saving[1] == saving[4]
    assert plain[4] - plain[1] == 3 * (plain[2] - plain[1]) > 0  # linear without saving
    assert plain[1] > 3 * saving[1]
    # What is kept: each per-scale sequence's output (two per scale, float32), the model input
    # and output, and a few kilobytes of resampling-kernel intermediates (C x 8 x 8 matrices).
    voxels = 16 ** 3
    sequences = 2 * sum(4 * 2 ** i * voxels // 8 ** i * 4 for i in range(3))
    assert 0 <= saving[1] - sequences - 1 * voxels * 4 - 2 * voxels * 4 < 8 * 1024


def _loss_grads(model, x, target):
    y = model(x)
    h = model.pre(x)  # the inverse direction of the core, with a loss of its own
    loss = (y - target).square().mean() + model.core.inverse(h).sin().sum()
    return torch.autograd.grad(loss, [x, *model.parameters()])


def test_memory_saving_gives_the_gradients_of_plain_autograd():
    torch.manual_seed(0)
    plain = _perturb(IUNet3D(2, 3, channels=4, scales=3, blocks_per_scale=2,
                             memory_saving=False).double(), scale=0.2)
    saving = copy.deepcopy(plain)
    sequences = [m for m in saving.modules() if isinstance(m, ReversibleSequence)]
    assert len(sequences) == 6
    for seq in sequences:
        seq.memory_saving = True
    assert saving.memory_saving and not plain.memory_saving
    x = _volume(1, 2, 8, 8, 8, dtype=torch.float64).requires_grad_()
    target = _volume(1, 3, 8, 8, 8, seed=1, dtype=torch.float64)
    want = _loss_grads(plain, x, target)
    got = _loss_grads(saving, x, target)
    assert len(got) == len(want) == 1 + len(list(plain.parameters()))
    for i, (a, b) in enumerate(zip(got, want)):
        err = ((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()
        assert err < 1e-6, f"gradient {i}: relative error {err:.3g}"


def test_training_can_leave_the_identity():
    """At initialisation the zero-initialised norms get gradients (the other layers of a
    sub-network do not yet: its output is multiplied by zero)."""
    model = IUNet3D(1, 2, channels=4, scales=2, blocks_per_scale=1)
    x, target = _volume(1, 1, 8, 8, 8), _volume(1, 2, 8, 8, 8, seed=1)
    (model(x) - target).square().mean().backward()
    last_norms = [seq.blocks[0].f[-1] for seq in model.core.sequences()]
    assert all(norm.weight.grad.abs().max() > 0 and norm.bias.grad.abs().max() > 0
               for norm in last_norms)


def test_presets_build_the_iunet_and_describe_it():
    assert FAMILIES["iunet3d"].network is IUNet3D
    demo = config.load_preset("demo-seg")
    kind, kwargs = model_spec(demo)
    assert kind == "iunet3d"
    assert kwargs == {"in_channels": 4, "out_channels": 3, "channels": 8, "scales": 3,
                      "blocks_per_scale": 2, "memory_saving": True}
    text = build_model(kind, **kwargs).describe(demo.patch.size)
    assert "8@32x32x32 -> 16@16x16x16 -> 32@8x8x8" in text

    brats = config.load_preset("brats-seg")
    kind, kwargs = model_spec(brats)
    model = build_model(kind, **kwargs)
    assert isinstance(model, IUNet3D) and model.channels == 32 and model.scales == 5
    text = model.describe(brats.patch.size)
    assert ("32@160x192x128 -> 64@80x96x64 -> 128@40x48x32 -> 256@20x24x16 -> 512@10x12x8"
            in text)
    assert f"parameters: {sum(p.numel() for p in model.parameters()):,}" in text
    assert "padded" not in text
    assert "padded to 20x20x24" in IUNet3D(1, 1, 4, 3).describe((20, 18, 22))
