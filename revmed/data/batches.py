"""Batches of one epoch's patches, in an order that depends only on the seed and the epoch.

Paired keys (``X`` and ``Y``, or ``X`` and ``label``) move together; unpaired ``X`` and ``Y``
are shuffled apart, the shorter one cycled. Segmentation batches are flipped along each spatial
axis with probability 1/2 per patch. Because the order and the flips are drawn from a generator
seeded by ``(seed, epoch)``, a resumed epoch can skip the batches already done and get the
rest exactly as an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def batch_count(patches: dict[str, np.ndarray], batch_size: int) -> int:
    """Steps of an epoch: full batches of ``batch_size`` (at least one)."""
    return max(1, len(patches["X"]) // batch_size)


def _order(patches: dict[str, np.ndarray], kind: str,
           generator: torch.Generator) -> tuple[int, dict[str, list[int]]]:
    """``(n, {key: indices})``: the epoch's order of each key's patches."""
    if kind == "unpaired":
        n = max(len(patches["X"]), len(patches["Y"]))
        order = {k: torch.randperm(len(patches[k]), generator=generator) for k in ("X", "Y")}
        return n, {k: [int(order[k][i % len(order[k])]) for i in range(n)] for k in order}
    n = len(patches["X"])
    perm = [int(i) for i in torch.randperm(n, generator=generator)]
    return n, {k: perm for k in patches}


def _flip(batch: dict[str, torch.Tensor], keys: tuple[str, ...],
          generator: torch.Generator) -> None:
    """Flip each item of ``batch`` along each spatial axis with probability 1/2, in place."""
    flips = torch.rand(len(batch["X"]), 3, generator=generator) < 0.5
    for i, axes in enumerate(flips):
        dims = [d for d, flip in zip((1, 2, 3), axes.tolist()) if flip]
        if dims:
            for k in keys:
                batch[k][i] = torch.flip(batch[k][i], dims)


def epoch_batches(patches: dict[str, np.ndarray], kind: str, batch_size: int, seed: int,
                  epoch: int, device: torch.device,
                  skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """The batches ``{key: (B, C, D, H, W)}`` of ``epoch`` on ``device``, from the patches
    ``{key: (N, C, D, H, W)}`` of a dataset of ``kind``; ``skip`` leaves out the first batches
    (of a resumed epoch) and yields the rest exactly as without it."""
    generator = torch.Generator().manual_seed(seed * 7919 + epoch)
    keys = ("X", "label") if kind == "segmentation" else ("X", "Y")
    n, index = _order(patches, kind, generator)
    last_start = n - batch_size + 1 if n >= batch_size else 1
    for number, start in enumerate(range(0, last_start, batch_size)):
        if number < skip:
            if kind == "segmentation":  # draw this batch's flips all the same
                torch.rand(len(index["X"][start:start + batch_size]), 3, generator=generator)
            continue
        batch = {k: torch.from_numpy(patches[k][index[k][start:start + batch_size]])
                 for k in keys}
        if kind == "segmentation":
            _flip(batch, keys, generator)
        yield {k: v.to(device) for k, v in batch.items()}
