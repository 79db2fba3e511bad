"""The RevGAN's encoder variants: the papers' linear SRCNN, revmed's ReLU form, and the strided
generator of the authors' chest-CT runs (core at half resolution)."""

from __future__ import annotations

import pytest
import torch

from revmed import config
from revmed.errors import ConfigError
from revmed.models import RevGAN3D, build_model, model_spec

SIZES = [(16, 16, 16), (13, 16, 9), (7, 5, 6)]


def _x(shape, channels=1, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(2, channels, *shape, generator=g, dtype=dtype) * 2 - 1)


@pytest.mark.parametrize("encoder", ["srcnn", "srcnn-relu", "strided"])
@pytest.mark.parametrize("shape", SIZES)
def test_both_directions_keep_the_size_of_any_input(encoder, shape):
    model = RevGAN3D(1, 2, width=8, depth=2, encoder=encoder).eval()
    with torch.no_grad():
        assert model(_x(shape)).shape == (2, 2, *shape)
        assert model.reverse(_x(shape, 2)).shape == (2, 1, *shape)


def test_the_strided_core_runs_at_half_resolution():
    model = RevGAN3D(width=8, depth=1, encoder="strided")
    assert model.core_input(_x((16, 12, 8))).shape == (2, 8, 8, 6, 4)
    assert model.core_input(_x((13, 16, 9))).shape == (2, 8, 7, 8, 5)  # padded to even first
    flat = RevGAN3D(width=8, depth=1, encoder="srcnn")
    assert flat.core_input(_x((16, 12, 8))).shape == (2, 8, 16, 12, 8)


@pytest.mark.parametrize("encoder", ["srcnn", "srcnn-relu", "strided"])
def test_residual_generators_start_at_their_input(encoder):
    model = RevGAN3D(width=8, depth=2, residual=True, encoder=encoder)
    x = _x((10, 12, 9))
    torch.testing.assert_close(model(x), x, rtol=0, atol=0)
    torch.testing.assert_close(model.reverse(x), x, rtol=0, atol=0)


def test_the_srcnn_encoder_is_linear_and_the_relu_form_is_not():
    x = _x((8, 8, 8))
    for encoder, linear in (("srcnn", True), ("srcnn-relu", False)):
        enc = RevGAN3D(width=8, depth=0, encoder=encoder).enc_x
        with torch.no_grad():
            zero = enc(torch.zeros_like(x))
            negated, single = enc(-x) - zero, enc(x) - zero  # (ReLU keeps positive scaling)
        assert torch.allclose(negated, -single, atol=1e-5) is linear, encoder


def test_the_tanh_keeps_strided_outputs_in_the_network_range():
    model = RevGAN3D(width=8, depth=1, encoder="strided", init_std=1.0).eval()
    with torch.no_grad():
        out = model(_x((8, 8, 8)) * 50)
    assert out.abs().max() <= 1.0 and out.abs().max() > 0.5


def test_memory_free_gradients_of_the_strided_generator_match_autograd():
    torch.manual_seed(0)
    saving = RevGAN3D(width=8, depth=3, encoder="strided", memory_saving=True).double()
    plain = RevGAN3D(width=8, depth=3, encoder="strided", memory_saving=False).double()
    plain.load_state_dict(saving.state_dict())
    for net in (saving, plain):  # a non-trivial core: the couplings' last convs are not zero
        torch.manual_seed(1)
        for p in net.core.parameters():
            p.data.add_(torch.randn_like(p) * 0.1)
    x = _x((10, 8, 6), dtype=torch.float64)
    grads = []
    for net in (saving, plain):
        loss = (net(x) ** 2).mean() + (net.reverse(x) ** 2).mean()
        grads.append(torch.autograd.grad(loss, list(net.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_the_encoder_key():
    preset = config.load_preset("demo-sr", ["model.encoder='strided'"])
    kind, kwargs = model_spec(preset)
    assert kwargs["encoder"] == "strided" and build_model(kind, **kwargs).stride == 2
    with pytest.raises(ConfigError, match="model.width.*multiple of 4"):
        config.load_preset("demo-sr", ["model.encoder='strided'", "model.width=6"])
    with pytest.raises(ConfigError, match="model.encoder"):
        config.load_preset("demo-sr", ["model.encoder='vnet'"])
    with pytest.raises(ConfigError, match="applies to revgan3d"):
        config.load_preset("demo-seg", ["model.encoder='srcnn'"])
    old = RevGAN3D(width=8, depth=1)  # checkpoints without the argument: revmed's first form
    assert old.encoder == "srcnn-relu" and isinstance(old.enc_x[-1], torch.nn.ReLU)


def test_the_strided_generator_trains_and_infers_both_ways_through_the_cli(cli, tmp_path):
    import numpy as np

    from revmed.data.synthetic import synthesize
    from revmed.io import read_volume

    synthesize("chestct-da", tmp_path / "data", cases=3, seed=1, shape=(24, 24, 16))
    sets = ["model.encoder='strided'", "model.width=8", "model.depth=1",
            "patch.size=[16,16,16]", "patch.per_volume=2", "train.epochs=1",
            "train.lambda_gan=0", "train.batch_size=2"]
    trained = cli("train", "--preset", "demo-da", "--data", tmp_path / "data", "--out",
                  tmp_path / "run", "--quiet", *[a for s in sets for a in ("--set", s)])
    assert trained.code == 0, trained.err
    case = sorted((tmp_path / "data" / "test" / "X").iterdir())[0]
    for extra, name in (([], "f.nii.gz"), (["--reverse"], "g.nii.gz")):
        result = cli("infer", case, "-o", tmp_path / name, "--model", tmp_path / "run" / "best.pt",
                     "--quiet", *extra)
        assert result.code == 0, result.err
        out, source = read_volume(tmp_path / name), read_volume(case)
        assert out.shape == source.shape and np.allclose(out.affine, source.affine)
        assert np.isfinite(out.array).all() and out.array.std() > 1
