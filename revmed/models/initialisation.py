"""The initialisation the RevGAN generator and the PatchGAN critic share (pix2pix's)."""

from __future__ import annotations

from torch import nn


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std) convolution weights and zero biases, norms at N(1, std); convolutions marked
    ``revmed_zero_init`` (the couplings' last ones, which start the core as the identity)
    stay at zero."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d | nn.ConvTranspose3d) and not getattr(m, "revmed_zero_init",
                                                                          False):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm3d | nn.GroupNorm) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
