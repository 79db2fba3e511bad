"""Models: the 3D RevGAN generator, the 3D PatchGAN critic, the 3D iUNet, and the registry of
model families (each model module registers its family when imported here)."""

# the families register in the order imported, which is the order `model.kind` lists them
# (docs/cli.md): the RevGAN first, then the iUNet
from revmed.models.revgan import RevGAN3D, RevGANSection
from revmed.models.iunet import IUNet3D, IUNetCore, IUNetSection
from revmed.models.discriminator import (PatchDiscriminator3D, build_critics, make_critics,
                                         smallest_critic_edge)
from revmed.models.registry import FAMILIES, ModelFamily, build_model, get_family, model_spec

__all__ = ["FAMILIES", "IUNet3D", "IUNetCore", "IUNetSection", "ModelFamily",
           "PatchDiscriminator3D", "RevGAN3D", "RevGANSection", "build_critics", "build_model",
           "get_family", "make_critics", "model_spec", "smallest_critic_edge"]
