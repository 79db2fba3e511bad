"""Training: objectives, the training loop and checkpoints."""

from revmed.engine.checkpoint import load_checkpoint, save_checkpoint
from revmed.engine.objectives import CycleGANObjective, ImagePool, Pix2PixObjective, gan_loss

__all__ = ["CycleGANObjective", "ImagePool", "Pix2PixObjective", "gan_loss", "load_checkpoint",
           "save_checkpoint"]
