"""Random patches of the training pairs, seeded, preferring patches with something in them.

Scans have background (air around the body, the black outside a brain) that teaches the
network nothing; a drawn patch whose target is mostly at the bottom of the window is drawn
again (a few times, then kept), so steps go to anatomy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Fraction of a patch's target voxels that must lie above the window's bottom.
MIN_CONTENT = 0.25
#: Draws per patch before one with less content is kept.
DRAWS = 8
#: Normalised value under which a voxel counts as the window's bottom (background).
BOTTOM = -0.98


def patch_size(size: Sequence[int], shapes: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """``size`` shrunk, axis by axis, to fit in every pair of ``shapes``."""
    return tuple(min([int(s)] + [int(shape[a]) for shape in shapes])  # type: ignore[return-value]
                 for a, s in enumerate(size))


class PatchSampler:
    """Batches of random crops of ``pairs`` (normalised ``(input, target)`` arrays, ``(I, J,
    K)`` each, the two of a pair of one shape) of ``size``, from a generator seeded with
    ``seed``.

    ``batch(n)`` returns ``{"X": (n, 1, *size), "Y": (n, 1, *size)}`` float32 tensors.
    """

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], size: Sequence[int],
                 seed: int) -> None:
        self.pairs = list(pairs)
        self.size = patch_size(size, [x.shape for x, _ in self.pairs])
        self.rng = np.random.default_rng(seed)
        # pairs are drawn in proportion to their voxels
        voxels = np.array([x.size for x, _ in self.pairs], dtype=np.float64)
        self.weights = voxels / voxels.sum()

    def _crop(self) -> tuple[np.ndarray, np.ndarray]:
        best, best_content = None, -1.0
        for _ in range(DRAWS):
            x, y = self.pairs[int(self.rng.choice(len(self.pairs), p=self.weights))]
            corner = [int(self.rng.integers(0, n - s + 1)) for n, s in zip(x.shape, self.size)]
            where = tuple(slice(c, c + s) for c, s in zip(corner, self.size))
            content = float(np.mean(y[where] > BOTTOM))
            if content > best_content:
                best, best_content = (x[where], y[where]), content
            if content >= MIN_CONTENT:
                break
        return best  # type: ignore[return-value]

    def batch(self, n: int) -> dict[str, torch.Tensor]:
        crops = [self._crop() for _ in range(n)]
        return {"X": torch.from_numpy(np.stack([x for x, _ in crops])[:, None].copy()),
                "Y": torch.from_numpy(np.stack([y for _, y in crops])[:, None].copy())}
