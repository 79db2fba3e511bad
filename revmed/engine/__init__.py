"""Training: objectives, one training step, the loop, its run folder, validation, and jobs of
several processes."""

from revmed.engine.objectives import CycleGANObjective, ImagePool, Pix2PixObjective, gan_loss

__all__ = ["CycleGANObjective", "ImagePool", "Pix2PixObjective", "gan_loss"]
