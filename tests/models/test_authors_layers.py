"""The presets named after a paper build the authors' networks.

The reference networks below are written out here from the authors' 3D code (the RevGAN
repository's ``networks3d.py``: its SRCNN generator, its strided generator with the thick
coupling block, and its PatchGAN critic), independently of revmed's builders. Each test copies
revmed's weights into the reference, in order, and checks that both compute the same thing:
the layers, their order, their settings and the parameter count all have to agree for that.

The one deliberate substitution: the authors' SRCNN couplings use ``BatchNorm3d``; revmed's use
an affine ``InstanceNorm3d``. With the papers' batch of one volume, batch norm in training
normalises each channel over that one volume, which is what instance norm does, so the two
compute the same; the test runs the reference in training mode with a batch of one to show it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revmed import config
from revmed.models import build_model, model_spec
from revmed.models.discriminator import make_critics

PAPER_SRCNN = ("hcp-sr", "chestct-sr", "chestct-da", "chestct-da-unpaired")
PAPER_STRIDED = ("chestct-sr-strided", "chestct-da-strided", "chestct-da-unpaired-strided")


# --- the authors' layers, written out --------------------------------------------------------

class RefCoupling(nn.Module):
    """memcnn's additive block: ``y1 = x1 + f(x2)``, ``y2 = x2 + g(y1)`` on channel halves."""

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f, self.g = f, g

    def forward(self, x):
        x1, x2 = torch.chunk(x, 2, dim=1)
        y1 = x1 + self.f(x2)
        return torch.cat([y1, x2 + self.g(y1)], dim=1)

    def inverse(self, y):
        y1, y2 = torch.chunk(y, 2, dim=1)
        x2 = y2 - self.g(y1)
        return torch.cat([y1 - self.f(x2), x2], dim=1)


def ref_srcnn_branch(c: int) -> nn.Sequential:
    """The SRCNN generator's coupling branch (its ``RevBlock3d`` with batch norm)."""
    return nn.Sequential(nn.ReplicationPad3d(1), nn.Conv3d(c, c, 3), nn.BatchNorm3d(c),
                         nn.ReLU(), nn.ReplicationPad3d(1), nn.Conv3d(c, c, 3))


def ref_thick_branch(c: int) -> nn.Sequential:
    """The strided generator's coupling branch (its ``ThickBlock3d``): a leading norm, and
    every norm without a learned scale and shift."""
    return nn.Sequential(nn.InstanceNorm3d(c), nn.ReplicationPad3d(1), nn.Conv3d(c, c, 3),
                         nn.InstanceNorm3d(c), nn.ReLU(), nn.ReplicationPad3d(1),
                         nn.Conv3d(c, c, 3))


class RefGenerator(nn.Module):
    """Per-domain encoders and decoders around one core run forwards (F) and backwards (G)."""

    def __init__(self, down_x, up_x, down_y, up_y, blocks) -> None:
        super().__init__()
        self.down_x, self.up_x, self.down_y, self.up_y = down_x, up_x, down_y, up_y
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        h = self.down_x(x)
        for block in self.blocks:
            h = block(h)
        return self.up_y(h)

    def reverse(self, y):
        h = self.down_y(y)
        for block in reversed(self.blocks):
            h = block.inverse(h)
        return self.up_x(h)


def ref_srcnn(c_x: int, c_y: int, ngf: int, depth: int) -> RefGenerator:
    def down(c):
        return nn.Sequential(nn.ReplicationPad3d(1), nn.Conv3d(c, ngf, 3))

    def up(c):
        return nn.Sequential(nn.Conv3d(ngf, c, 1))

    half = ngf // 2
    return RefGenerator(down(c_x), up(c_x), down(c_y), up(c_y),
                        [RefCoupling(ref_srcnn_branch(half), ref_srcnn_branch(half))
                         for _ in range(depth)])


def ref_strided(c_x: int, c_y: int, ngf: int, depth: int) -> RefGenerator:
    """The strided generator: ``ngf`` channels at full resolution, ``2 ngf`` in the core."""
    def down(c):
        return nn.Sequential(nn.ReplicationPad3d(2), nn.Conv3d(c, ngf, 5), nn.InstanceNorm3d(ngf),
                             nn.ReLU(), nn.Conv3d(ngf, 2 * ngf, 3, stride=2, padding=1),
                             nn.InstanceNorm3d(2 * ngf), nn.ReLU())

    def up(c):
        return nn.Sequential(nn.ConvTranspose3d(2 * ngf, ngf, 3, stride=2, padding=1,
                                                output_padding=1),
                             nn.InstanceNorm3d(ngf), nn.ReLU(), nn.ReplicationPad3d(2),
                             nn.Conv3d(ngf, c, 5), nn.Tanh())

    return RefGenerator(down(c_x), up(c_x), down(c_y), up(c_y),
                        [RefCoupling(ref_thick_branch(ngf), ref_thick_branch(ngf))
                         for _ in range(depth)])


def ref_critic(c: int, ndf: int) -> nn.Sequential:
    """The 3D PatchGAN of two stride-2 layers with instance norms without scale and shift."""
    return nn.Sequential(
        nn.Conv3d(c, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv3d(ndf, 2 * ndf, 4, stride=2, padding=1), nn.InstanceNorm3d(2 * ndf),
        nn.LeakyReLU(0.2),
        nn.Conv3d(2 * ndf, 4 * ndf, 4, stride=1, padding=1), nn.InstanceNorm3d(4 * ndf),
        nn.LeakyReLU(0.2),
        nn.Conv3d(4 * ndf, 1, 4, stride=1, padding=1))


# --- comparing -------------------------------------------------------------------------------

def layer_list(module: nn.Module) -> list[tuple]:
    """The leaf layers in order with the settings that change what they compute."""
    out = []
    for m in module.modules():
        if list(m.children()):
            continue
        if isinstance(m, nn.Conv3d | nn.ConvTranspose3d):
            out.append((type(m).__name__, m.in_channels, m.out_channels, m.kernel_size,
                        m.stride, m.padding, m.padding_mode, m.bias is not None))
        elif isinstance(m, nn.BatchNorm3d | nn.InstanceNorm3d):
            # batch norm over one volume is instance norm (see the module docstring)
            out.append(("norm", m.num_features, m.affine))
        elif isinstance(m, nn.ReplicationPad3d):
            out.append(("replicate", tuple(m.padding)))
        elif isinstance(m, nn.LeakyReLU):
            out.append(("LeakyReLU", m.negative_slope))
        elif isinstance(m, nn.ReLU | nn.Tanh):
            out.append((type(m).__name__,))
        else:
            raise AssertionError(f"a layer the authors' networks do not have: {m}")
    return out


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """``target``'s parameters set to ``source``'s, in order (the shapes must agree)."""
    src, dst = list(source.parameters()), list(target.parameters())
    assert len(src) == len(dst)
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            assert s.shape == d.shape
            d.copy_(s)


def revmed_parts(model) -> list[nn.Module]:
    return [model.enc_x, model.dec_x, model.enc_y, model.dec_y,
            *[m for b in model.core.blocks for m in (b.f, b.g)]]


def ref_parts(ref: RefGenerator) -> list[nn.Module]:
    return [ref.down_x, ref.up_x, ref.down_y, ref.up_y,
            *[m for b in ref.blocks for m in (b.f, b.g)]]


def assert_same_generator(model, ref: RefGenerator, edge: int) -> None:
    for ours, theirs in zip(revmed_parts(model), ref_parts(ref), strict=True):
        assert layer_list(ours) == layer_list(theirs)
        copy_weights(ours, theirs)
    assert (sum(p.numel() for p in model.parameters())
            == sum(p.numel() for p in ref.parameters()))
    # non-zero couplings, so the cores do something and their order matters
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for ours, theirs in zip(revmed_parts(model), ref_parts(ref), strict=True):
        copy_weights(ours, theirs)
    model.train(), ref.train()  # the papers' training: a batch of one volume
    x = torch.randn(1, model.enc_x[1].in_channels, edge, edge, edge)
    y = torch.randn(1, model.enc_y[1].in_channels, edge, edge, edge)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.reverse(y), ref.reverse(y), rtol=1e-4, atol=1e-5)


def build(preset):
    kind, kwargs = model_spec(preset)
    return build_model(kind, **kwargs)


@pytest.mark.parametrize("name", PAPER_SRCNN)
def test_the_srcnn_presets_build_the_papers_3d_srcnn_revgan(name):
    preset = config.load_preset(name, ["model.width=8"])
    assert preset.model.encoder == "srcnn" and preset.train.batch_size == 1
    model = build(preset)
    ref = ref_srcnn(preset.data.in_channels, preset.data.out_channels, 8, preset.model.depth)
    assert_same_generator(model, ref, edge=8)


@pytest.mark.parametrize("name", PAPER_STRIDED)
def test_the_strided_presets_build_the_authors_chest_ct_generator(name):
    preset = config.load_preset(name, ["model.width=8"])
    assert preset.model.encoder == "strided" and not preset.model.residual
    model = build(preset)
    ref = ref_strided(preset.data.in_channels, preset.data.out_channels, 4, preset.model.depth)
    assert_same_generator(model, ref, edge=10)


def test_the_full_size_strided_generator_has_the_authors_parameter_count():
    """At the chest-CT runs' widths (``ngf = 32``, two blocks) the count is the authors'."""
    preset = config.load_preset("chestct-sr-strided")
    ref = ref_strided(1, 1, 32, 2)
    assert (sum(p.numel() for p in build(preset).parameters())
            == sum(p.numel() for p in ref.parameters()))


@pytest.mark.parametrize("name", PAPER_SRCNN + PAPER_STRIDED)
def test_the_paper_presets_build_the_authors_critics(name):
    preset = config.load_preset(name, ["model.disc_width=4"])
    critics = make_critics(preset.model, preset.data, preset.train.objective)
    paired = preset.train.objective == "paired"
    for domain, channels in (("X", preset.data.in_channels), ("Y", preset.data.out_channels)):
        extra = (preset.data.out_channels if domain == "X" else preset.data.in_channels) \
            if paired else 0
        ref = ref_critic(channels + extra, 4)
        ours = critics[domain]
        assert layer_list(ours) == layer_list(ref)
        copy_weights(ours, ref)
        x = torch.randn(2, channels + extra, 24, 24, 24)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)


def test_revmeds_own_layers_differ_where_the_docs_say():
    """``model.layers = "revmed"`` keeps affine norms, replication padding in the stride-2
    convolution and no leading norm in the couplings (the form of older checkpoints)."""
    preset = config.load_preset("chestct-sr-strided", ["model.width=8", "model.layers='revmed'"])
    model = build(preset)
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(m.affine for m in norms)
    assert isinstance(model.core.blocks[0].f[0], nn.ReplicationPad3d)
    strided = [m for m in model.enc_x.modules() if isinstance(m, nn.Conv3d) and m.stride[0] == 2]
    assert strided[0].padding == (0, 0, 0)
    critic = make_critics(preset.model, preset.data, "paired")["Y"]
    assert all(m.affine for m in critic.modules() if isinstance(m, nn.InstanceNorm3d))
