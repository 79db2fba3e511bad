"""Invertible building blocks and the memory-saving reversible engine (no medical knowledge).

- :class:`ReversibleSequence`: runs invertible blocks; with ``memory_saving=True`` backward
  rebuilds activations instead of storing them (constant activation memory in depth).
- :class:`AdditiveCoupling`: ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``, with a fused backward.
- :class:`OrthogonalResampling3d`: learnable orthogonal 2x downsampling (iUNets), whose inverse
  is the matching upsampling; :class:`Inverted` runs any block backwards.
- :class:`ChannelSplit` / :class:`ChannelConcat`: invertible channel split and concatenation.
- :func:`invertibility_error` and :class:`SavedTensorMeter`: checks to log and to test.

See docs/engine.md.
"""

from revmed.nn.channels import ChannelConcat, ChannelSplit, concat_channels, split_channels
from revmed.nn.coupling import AdditiveCoupling
from revmed.nn.diagnostics import SavedTensorMeter, invertibility_error
from revmed.nn.invertible import InvertibleModule, Inverted
from revmed.nn.resampling import OrthogonalResampling3d, haar_matrix
from revmed.nn.reversible import ReversibleSequence

__all__ = [
    "AdditiveCoupling",
    "ChannelConcat",
    "ChannelSplit",
    "InvertibleModule",
    "Inverted",
    "OrthogonalResampling3d",
    "ReversibleSequence",
    "SavedTensorMeter",
    "concat_channels",
    "haar_matrix",
    "invertibility_error",
    "split_channels",
]
