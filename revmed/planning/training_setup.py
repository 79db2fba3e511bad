"""What the planner plans for: the preset's parts that one training step's memory depends on.

A ``TrainingSetup`` holds the preset's name, training patch and the ``[model]``, ``[data]`` and
``[train]`` sections; everything it says of the model (the depth key, the patch multiple, the
smallest edge training runs at) it asks the model family (``revmed.models.registry``). Sizes
are voxels per axis, byte counts bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from revmed.models import ModelFamily, get_family, make_critics
from revmed.preset import DataSection, ModelSection, TrainSection
from revmed.sizes import FLOAT32


@dataclass(frozen=True)
class TrainingSetup:
    """The networks (``model``: family and keys; ``data``: their image channels), the objective
    (``train``: critics, image pool, batch size, seed) and the patch (``patch``, voxels per
    axis) of one training step; ``name`` is the preset's, for messages."""

    name: str
    patch: tuple[int, ...]
    model: ModelSection
    data: DataSection
    train: TrainSection

    @property
    def family(self) -> ModelFamily:
        return get_family(self.model.kind)

    @property
    def depth_key(self) -> str:
        """The ``[model]`` key that sets the reversible depth (``depth``, ``blocks_per_scale``)."""
        return self.family.depth_key

    @property
    def depth(self) -> int:
        """The reversible depth."""
        return self.family.depth_of(self.model)

    def with_depth(self, depth: int) -> TrainingSetup:
        """This setup with the reversible depth set to ``depth``."""
        return replace(self, model=self.family.with_depth(self.model, depth))

    @property
    def patch_multiple(self) -> int:
        """Patch edges the model runs at unpadded are multiples of this."""
        return self.family.patch_multiple(self.model)

    @property
    def smallest_edge(self) -> int:
        """The smallest cubic patch edge this setup trains on: what the family's training needs
        (``ModelFamily.smallest_edge``), rounded up to the patch multiple."""
        need, m = self.family.smallest_edge(self.model, self.train), self.patch_multiple
        return max(m, -(-need // m) * m)

    def padded(self, patch: Sequence[int]) -> list[int]:
        """``patch`` padded up to the patch multiple, as the network runs it."""
        m = self.patch_multiple
        return [-(-int(n) // m) * m for n in patch]

    def voxels(self, patch: Sequence[int]) -> int:
        """Voxels the network works on for ``patch`` (after padding to its multiple)."""
        return math.prod(self.padded(patch))

    def pool_bytes(self, patch: Sequence[int]) -> int:
        """Bytes of the CycleGAN image pools once full, at ``patch`` (0 for other objectives):
        ``pool_size`` float32 volumes of the input and output channels."""
        train, data = self.train, self.data
        if train.objective != "unpaired" or not train.uses_critics:
            return 0
        return (train.pool_size * (data.in_channels + data.out_channels)
                * math.prod(patch) * FLOAT32)


def count_parameters(setup: TrainingSetup) -> int:
    """Parameters one step trains: the network's and, when the objective trains them, the
    critics' (built on the meta device: no memory)."""
    family = setup.family
    with torch.device("meta"):
        modules = [family.network(**family.kwargs(setup.model, setup.data))]
        if setup.train.uses_critics:
            modules += list(make_critics(setup.model, setup.data,
                                         setup.train.objective).values())
    return sum(p.numel() for m in modules for p in m.parameters())
