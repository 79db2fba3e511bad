"""RevGAN3D, the PatchGAN critic, the objectives and checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from revmed import config
from revmed.checkpoint import read_payload, write_payload
from revmed.engine.objectives import CycleGANObjective, ImagePool, Pix2PixObjective
from revmed.errors import CheckpointError, ConfigError
from revmed.models import PatchDiscriminator3D, RevGAN3D, build_critics, build_model, model_spec


def _volume(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_core_starts_as_identity_and_is_shared_by_both_directions():
    model = RevGAN3D(1, 1, width=8, depth=3)
    h = _volume(2, 8, 8, 8, 8)
    torch.testing.assert_close(model.core(h), h)
    with torch.no_grad():  # train the core away from the identity, then invert it
        for p in model.core.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert (model.core(h) - h).abs().max() > 1e-3
    torch.testing.assert_close(model.core.inverse(model.core(h)), h, atol=1e-5, rtol=0)
    # F and G use the one core: G's graph reaches the same parameters as F's
    x = _volume(1, 1, 8, 8, 8, seed=1)
    grads_f = torch.autograd.grad(model(x).sum(), list(model.core.parameters()))
    grads_g = torch.autograd.grad(model.reverse(x).sum(), list(model.core.parameters()))
    assert all(a.abs().sum() > 0 and b.abs().sum() > 0 for a, b in zip(grads_f, grads_g))


def test_residual_model_starts_at_its_input_and_depth_zero_is_srcnn():
    x = _volume(1, 1, 8, 8, 8)
    torch.testing.assert_close(RevGAN3D(1, 1, width=8, depth=2, residual=True)(x), x)
    srcnn = RevGAN3D(1, 1, width=8, depth=0)
    assert srcnn.depth == 0 and srcnn(x).shape == x.shape and srcnn.reverse(x).shape == x.shape
    with pytest.raises(ValueError):
        RevGAN3D(1, 6, residual=True)
    with pytest.raises(ValueError):
        RevGAN3D(1, 1, width=7)


def test_channels_of_both_directions():
    model = RevGAN3D(6, 2, width=8, depth=1)
    assert model(_volume(1, 6, 8, 8, 8)).shape == (1, 2, 8, 8, 8)
    assert model.reverse(_volume(1, 2, 8, 8, 8)).shape == (1, 6, 8, 8, 8)


@pytest.mark.parametrize("objective", ["paired", "unpaired"])
def test_memory_saving_gives_the_gradients_of_plain_autograd(objective):
    """A whole generator step (both directions; the cycle runs the core forward then inverse)."""
    torch.manual_seed(0)
    plain = RevGAN3D(1, 1, width=4, depth=3, memory_saving=False).double()
    with torch.no_grad():
        for p in plain.core.parameters():
            p.add_(0.2 * torch.randn_like(p))
    saving = copy.deepcopy(plain)
    saving.core.memory_saving = True
    batch = {"X": _volume(1, 1, 8, 8, 8, dtype=torch.float64),
             "Y": _volume(1, 1, 8, 8, 8, seed=1, dtype=torch.float64)}
    make = {"paired": lambda: Pix2PixObjective(lambda_gan=0.0),
            "unpaired": lambda: CycleGANObjective(lambda_gan=0.0, pool_size=0)}[objective]
    grads = []
    for model in (plain, saving):
        loss = make().generator_step(model, {}, batch)[0]
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


def test_paired_loss_without_gan_is_lambda_times_both_l1_terms():
    model = RevGAN3D(1, 1, width=4, depth=1)
    batch = {"X": _volume(1, 1, 8, 8, 8), "Y": _volume(1, 1, 8, 8, 8, seed=1)}
    loss, logs, fakes = Pix2PixObjective(lambda_l1=100.0, lambda_gan=0.0).generator_step(
        model, {}, batch)
    expected = 100.0 * (F.l1_loss(model(batch["X"]), batch["Y"])
                        + F.l1_loss(model.reverse(batch["Y"]), batch["X"]))
    torch.testing.assert_close(loss, expected)
    assert set(fakes) == {"X", "Y"} and not fakes["Y"].requires_grad


def test_critic_patch_logits_and_conditional_channels():
    critic = PatchDiscriminator3D(2, width=4, layers=3)
    assert critic(_volume(1, 2, 32, 32, 32)).shape == (1, 1, 2, 2, 2)
    def critics_of(preset):
        return build_critics(preset.model, preset.data, preset.train.objective,
                             preset.patch.size)

    critics = critics_of(config.load_preset("demo-sr", ["patch.size=[24,24,24]"]))
    assert critics["Y"][0].in_channels == 2  # paired: input beside the output
    unpaired = config.load_preset("demo-da", ["train.objective='unpaired'"])
    assert critics_of(unpaired)["Y"][0].in_channels == 1
    with pytest.raises(ConfigError, match="patch.size"):  # 2 stride-2 layers need 12^3
        critics_of(config.load_preset("demo-sr", ["patch.size=[8,8,8]"]))
    with pytest.raises(ConfigError, match="patch.size.*at least 24"):
        critics_of(config.load_preset("demo-sr", ["patch.size=[16,16,16]",
                                                  "model.disc_layers=3"]))


def test_image_pool_keeps_and_swaps_old_volumes():
    pool = ImagePool(2)
    first = [torch.full((1, 1, 2, 2, 2), float(i)) for i in range(2)]
    for volume in first:
        assert torch.equal(pool.query(volume), volume)  # filling: returned as is
    seen = {float(pool.query(torch.full((1, 1, 2, 2, 2), 9.0)).flatten()[0]) for _ in range(20)}
    assert 9.0 in seen and seen & {0.0, 1.0}  # sometimes the new one, sometimes an old one
    assert torch.equal(ImagePool(0).query(first[0]), first[0])


def test_registry_rebuilds_the_same_model_from_a_checkpoint(tmp_path):
    preset = config.load_preset("demo-sr")
    kind, kwargs = model_spec(preset)
    model = build_model(kind, **kwargs)
    path = write_payload(tmp_path / "m.pt", {"model": {"kind": kind, "kwargs": kwargs},
                                               "state": {"generator": model.state_dict()}})
    loaded = read_payload(path, kind="revgan3d")
    again = build_model(loaded["model"]["kind"], **loaded["model"]["kwargs"])
    again.load_state_dict(loaded["state"]["generator"])
    x = _volume(1, 1, 8, 8, 8)
    torch.testing.assert_close(again(x), model(x))
    assert not list(tmp_path.glob(".*tmp*"))


class _Payload:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_checkpoint_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = str(marker)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "revmed-checkpoint", "version": 1, "x": payload}, evil)
    with pytest.raises(CheckpointError, match="evil.pt"):
        read_payload(evil)
    assert not marker.exists()


def test_foreign_newer_and_other_kind_checkpoints(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pt"):
        read_payload(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a revmed checkpoint"):
        read_payload(tmp_path / "plain.pt")
    write_payload(tmp_path / "new.pt", {"model": {"kind": "revgan3d", "kwargs": {}}})
    newer = torch.load(tmp_path / "new.pt", weights_only=True)
    newer["version"] = 99
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="format version 99 .*upgrade it"):
        read_payload(tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="not iunet3d"):
        read_payload(tmp_path / "new.pt", kind="iunet3d")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_payload(tmp_path / "absent.pt")


def test_image_pool_items_do_not_keep_their_whole_batch_alive():
    pool = ImagePool(4)
    pool.query(torch.zeros(4, 1, 8, 8, 8))
    for item in pool.items:
        assert item.untyped_storage().nbytes() == item.numel() * item.element_size()
