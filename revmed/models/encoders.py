"""The per-domain encoders and decoders of the 3D RevGAN, between image space and the feature
space of the invertible core.

``ENCODERS`` names the variants a preset's ``model.encoder`` chooses from:

* ``srcnn``: the 3D-SRCNN of the RevGAN paper's text (section 4.3): a 3x3x3 convolution lifts
  the image to ``width`` channels with no activation, a 1x1x1 convolution maps back. With
  ``depth = 0`` (no core) this is the papers' linear SRCNN baseline.
* ``srcnn-relu``: the same with a ReLU after the encoder's convolution, so the core sees
  non-negative features (revmed's first form, kept for its checkpoints and presets).
* ``strided``: the network of the authors' chest-CT runs: per domain a 5x5x5 convolution to
  ``width / 2`` channels with instance norm and ReLU, then a stride-2 3x3x3 convolution to
  ``width`` channels (norm, ReLU), so the core runs at half the resolution, 8x fewer voxels;
  the decoder is a stride-2 transposed 3x3x3 convolution back to ``width / 2`` channels (norm,
  ReLU) and a 5x5x5 convolution to the image, then tanh (the images live in [-1, 1]).

Every variant keeps the spatial size of its input (the strided one for even sizes; the
generator pads odd sizes). Convolutions pad by replicating the border, as the core does.

``authors=True`` builds the strided variant exactly as the authors' 3D code does: its instance
norms have no learned scale and shift, and the stride-2 convolution pads with zeros. Without it
(revmed's first form, which checkpoints without ``layers`` hold) the norms are affine and every
convolution pads by replication. The SRCNN variants have no norms, so the flag changes nothing
there.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

#: The encoder variants, and the factor by which each divides the spatial size for the core.
ENCODERS = {"srcnn": 1, "srcnn-relu": 1, "strided": 2}


def srcnn_encoder(in_channels: int, width: int, relu: bool = False) -> nn.Sequential:
    """``(B, in_channels, D, H, W) -> (B, width, D, H, W)``: a 3x3x3 convolution (and ReLU)."""
    layers: list[nn.Module] = [nn.ReplicationPad3d(1), nn.Conv3d(in_channels, width, 3)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def srcnn_decoder(width: int, out_channels: int) -> nn.Conv3d:
    """``(B, width, D, H, W) -> (B, out_channels, D, H, W)``: a 1x1x1 convolution."""
    return nn.Conv3d(width, out_channels, 1)


def _norm_relu(channels: int, affine: bool) -> list[nn.Module]:
    return [nn.InstanceNorm3d(channels, affine=affine), nn.ReLU(inplace=True)]


def strided_encoder(in_channels: int, width: int, authors: bool = False) -> nn.Sequential:
    """``(B, in_channels, D, H, W) -> (B, width, D/2, H/2, W/2)`` for even D, H, W."""
    half = width // 2
    down: list[nn.Module] = ([nn.Conv3d(half, width, 3, stride=2, padding=1)] if authors else
                             [nn.ReplicationPad3d(1), nn.Conv3d(half, width, 3, stride=2)])
    return nn.Sequential(nn.ReplicationPad3d(2), nn.Conv3d(in_channels, half, 5),
                         *_norm_relu(half, not authors), *down, *_norm_relu(width, not authors))


def strided_decoder(width: int, out_channels: int, tanh: bool = True,
                    authors: bool = False) -> nn.Sequential:
    """``(B, width, D/2, H/2, W/2) -> (B, out_channels, D, H, W)``; ends in tanh unless the
    generator adds its input (``tanh=False``, the residual option)."""
    half = width // 2
    layers: list[nn.Module] = [
        nn.ConvTranspose3d(width, half, 3, stride=2, padding=1, output_padding=1),
        *_norm_relu(half, not authors), nn.ReplicationPad3d(2), nn.Conv3d(half, out_channels, 5)]
    return nn.Sequential(*layers, nn.Tanh()) if tanh else nn.Sequential(*layers)


def build_codec(kind: str, image_channels: int, width: int, residual: bool,
                authors: bool = False) -> tuple[nn.Module, nn.Module]:
    """``(encoder, decoder)`` of variant ``kind`` for a domain of ``image_channels``
    (``authors``: the authors' layers, see the module doc)."""
    makers: dict[str, Callable[[], tuple[nn.Module, nn.Module]]] = {
        "srcnn": lambda: (srcnn_encoder(image_channels, width),
                          srcnn_decoder(width, image_channels)),
        "srcnn-relu": lambda: (srcnn_encoder(image_channels, width, relu=True),
                               srcnn_decoder(width, image_channels)),
        "strided": lambda: (strided_encoder(image_channels, width, authors),
                            strided_decoder(width, image_channels, not residual, authors)),
    }
    if kind not in makers:
        raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {kind!r}")
    return makers[kind]()


def last_convolution(decoder: nn.Module) -> nn.Conv3d:
    """The decoder's final convolution (the one the residual option starts at zero)."""
    convs = [m for m in decoder.modules() if isinstance(m, nn.Conv3d)]
    return convs[-1]
