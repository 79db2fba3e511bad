"""Models: the 3D RevGAN generator, the 3D PatchGAN critic, and the registry that builds them."""

from revmed.models.discriminator import PatchDiscriminator3D
from revmed.models.iunet import IUNet3D, IUNetCore
from revmed.models.registry import MODELS, build_discriminators, build_model, model_spec
from revmed.models.revgan import RevGAN3D

__all__ = ["IUNet3D", "IUNetCore", "MODELS", "PatchDiscriminator3D", "RevGAN3D",
           "build_discriminators", "build_model", "model_spec"]
