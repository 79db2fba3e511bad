"""Models built from a name and keyword arguments, so a checkpoint can rebuild its model.

``model_spec(preset)`` turns a preset into ``(kind, kwargs)``; ``build_model(kind, **kwargs)``
makes the module. The checkpoint stores the pair, so inference needs no preset.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from revmed.errors import ConfigError
from revmed.models.discriminator import PatchDiscriminator3D
from revmed.models.iunet import IUNet3D
from revmed.models.revgan import RevGAN3D

MODELS: dict[str, type[nn.Module]] = {"revgan3d": RevGAN3D, "iunet3d": IUNet3D}


def build_model(kind: str, **kwargs: Any) -> nn.Module:
    """The model ``kind`` (a key of ``MODELS``) made with ``kwargs``."""
    if kind not in MODELS:
        raise ConfigError(f"model kind {kind!r} is not available; available: "
                          f"{', '.join(sorted(MODELS))}")
    return MODELS[kind](**kwargs)


def model_spec(preset: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(kind, kwargs)`` of the generator a preset describes."""
    data, model = preset["data"], preset["model"]
    kind = model["kind"]
    if kind == "revgan3d":
        return kind, {"in_channels": data["in_channels"], "out_channels": data["out_channels"],
                      "width": model["width"], "depth": model["depth"],
                      "residual": model["residual"], "memory_saving": model["memory_saving"],
                      "init_std": model["init_std"]}
    if kind == "iunet3d":
        return kind, {"in_channels": data["in_channels"], "out_channels": data["out_channels"],
                      "channels": model["width"], "scales": model["scales"],
                      "blocks_per_scale": model["blocks_per_scale"],
                      "memory_saving": model["memory_saving"]}
    raise ConfigError(f"preset {preset['name']}: model kind {kind!r} is not available yet")


def build_discriminators(preset: dict[str, Any]) -> dict[str, PatchDiscriminator3D]:
    """The critics ``{"X": D_X, "Y": D_Y}``; conditional (input concatenated) when paired."""
    data, model = preset["data"], preset["model"]
    paired = preset["train"]["objective"] == "paired"
    cx, cy = data["in_channels"], data["out_channels"]
    extra = {"X": cy, "Y": cx} if paired else {"X": 0, "Y": 0}
    smallest = min(preset["patch"]["size"])
    needed = 2 ** model["disc_layers"] * 3
    if smallest < needed:
        raise ConfigError(f"preset {preset['name']}: key 'patch.size': the critic with "
                          f"disc_layers={model['disc_layers']} needs patches of at least "
                          f"{needed} voxels per axis, got {smallest}")
    return {domain: PatchDiscriminator3D(channels + extra[domain], model["disc_width"],
                                         model["disc_layers"], model["init_std"])
            for domain, channels in (("X", cx), ("Y", cy))}
