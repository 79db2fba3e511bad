"""Whole volumes through a translation-equivariant network in a few large tiles.

A network whose output at a voxel depends only on the input within its reach (``halo``
voxels; ``revmed.nn.reach``) can run on a volume cut into tiles, each read with ``halo``
extra voxels on every inner side and cropped back: the result equals one pass over the whole
volume, whatever the tiles. ``plan_tiles`` picks the grid of tiles that evaluates the fewest
voxels while no tile's input exceeds a voxel budget (from the memory the device has), so the
work is close to one evaluation per output voxel; ``tiled_predict`` runs it.

A network trained on patches one voxel thin along an axis (``slab_axis``: selfsr's, which
learns from in-plane detail) never saw neighbours along that axis: its convolutions padded the
one voxel by copies of itself. It runs in slabs: tiles without halo along that axis, each
tile's slabs side by side in the batch, so every slab is computed alone as in training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from revmed.runtime import as_channels_last, autocast
from revmed.sizes import available_memory

#: Most tiles tried along one axis when planning.
MAX_SPLITS = 64
#: Most voxels one tile reads (2^23, e.g. 256x256x128). A chest CT through chestct-da on the
#: 2-core CPU, as tiles run now (channels-last, fused): 2^23-voxel tiles took 84 s and 4.8 GiB
#: (1.17 evaluations per voxel), 2^24 and 2^25 took 97 s each and 7.4 and 9.6 GiB (1.11 and
#: 1.07): larger tiles read less halo but run no faster, and need up to twice the memory
#: (benchmarks/whole_volume.py --ways tiles,tiles@24,tiles@25, docs/benchmarks.md). Several
#: tiles also let progress show an ETA.
MAX_TILE_VOXELS = 2**23


@dataclass(frozen=True)
class Tile:
    """One tile: the network reads ``source`` of the volume, and ``keep`` of its output (in
    the tile's own coordinates) fills ``target`` of the result."""

    source: tuple[slice, ...]
    target: tuple[slice, ...]
    keep: tuple[slice, ...]


def _axis_tiles(size: int, splits: int, halo: int, align: int) -> list[tuple[int, int, int, int]]:
    """``(read_start, read_stop, start, stop)`` of ``splits`` tiles along an axis of ``size``
    voxels; starts are multiples of ``align`` (the last tile may be shorter)."""
    step = math.ceil(math.ceil(size / splits) / align) * align
    tiles = []
    for start in range(0, size, step):
        stop = min(start + step, size)
        tiles.append((max(start - halo, 0), min(stop + halo, size), start, stop))
    return tiles


def _axis_costs(size: int, halo: int, align: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """For each split count tried along one axis: the voxels read along it in all, the
    longest tile read, and the count. Tiles thinner than the halo read more halo than tile,
    and are not tried."""
    counts = [n for n in range(1, min(size, MAX_SPLITS) + 1)
              if n == 1 or math.ceil(size / n) >= max(halo, align)]
    read, longest = [], []
    for n in counts:
        tiles = _axis_tiles(size, n, halo, align)
        read.append(sum(b - a for a, b, _, _ in tiles))
        longest.append(max(b - a for a, b, _, _ in tiles))
    return np.array(read, dtype=np.float64), np.array(longest, dtype=np.float64), counts


def slab_axis(patch_size: Sequence[int]) -> int | None:
    """The spatial axis along which training patches of ``patch_size`` were one voxel thin
    (the network then runs in slabs along it), or None; the first of several
    (``runs_in_tiles``)."""
    thin = [axis for axis, size in enumerate(patch_size) if int(size) == 1]
    return thin[0] if thin else None


def runs_in_tiles(patch_size: Sequence[int]) -> bool:
    """Whether a network trained on patches of ``patch_size`` runs in tiles: not when they
    were one voxel thin along several axes (lines, not slabs)."""
    return sum(int(size) == 1 for size in patch_size) <= 1


def plan_tiles(shape: Sequence[int], halo: int, max_voxels: int, align: int = 1,
               slabs: int | None = None) -> list[Tile]:
    """The tiles of a volume of spatial ``shape`` for a network reaching ``halo`` voxels (a
    multiple of ``align``, the network's stride), none reading more than ``max_voxels``
    voxels unless even the finest grid tried must; of the grids that fit, the one reading the
    fewest voxels in all (then the one with the fewest tiles). Along axis ``slabs`` (see
    ``slab_axis``) tiles read no halo."""
    costs = [_axis_costs(int(s), 0, 1) if axis == slabs else _axis_costs(int(s), halo, align)
             for axis, s in enumerate(shape)]
    read = np.einsum("i,j,k->ijk", *(c[0] for c in costs))
    longest = np.einsum("i,j,k->ijk", *(c[1] for c in costs))
    tiles = np.einsum("i,j,k->ijk", *(np.array(c[2], dtype=np.float64) for c in costs))
    fits = longest <= max_voxels
    if not fits.any():
        fits = longest == longest.min()
    score = np.where(fits, read + tiles / (tiles.max() + 1), np.inf)
    best = np.unravel_index(int(np.argmin(score)), score.shape)
    per_axis = [_axis_tiles(int(s), costs[a][2][best[a]], *((0, 1) if a == slabs
                                                            else (halo, align)))
                for a, s in enumerate(shape)]
    plan = []
    for parts in np.ndindex(*(len(p) for p in per_axis)):
        chosen = [per_axis[a][i] for a, i in enumerate(parts)]
        plan.append(Tile(source=tuple(slice(r0, r1) for r0, r1, _, _ in chosen),
                         target=tuple(slice(t0, t1) for _, _, t0, t1 in chosen),
                         keep=tuple(slice(t0 - r0, t1 - r0) for r0, _, t0, t1 in chosen)))
    return plan


def tile_voxels(bytes_per_voxel: int, device: torch.device, held: int = 0) -> int:
    """Most voxels a tile may read: the memory the device has free (on the CPU, 70% of it
    less ``held`` bytes the caller still needs) over the network's bytes per voxel, at most
    ``MAX_TILE_VOXELS`` and at least 32^3."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] * 0.8
    else:
        free = max((available_memory() or 8 * 2**30) * 0.7 - held, 0)
    return int(max(min(free / bytes_per_voxel, MAX_TILE_VOXELS), 32**3))


def tiled_predict(net: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray,
                  tiles: Sequence[Tile], device: str | torch.device = "cpu",
                  precision: str = "fp32", channels_last: bool = False,
                  progress: Callable[[int, int], None] | None = None,
                  slabs: int | None = None) -> np.ndarray:
    """Run ``net`` over ``image`` ``(C, I, J, K)`` tile by tile; returns ``(C', I, J, K)``
    float32. Each tile runs on ``device`` under ``precision``'s autocast (channels-last with
    ``channels_last``); ``progress(done, total)`` is called after each tile. With ``slabs``
    (a spatial axis, ``slab_axis``) each tile's one-voxel slabs along that axis run as one
    batch, each alone (plan the tiles with the same ``slabs``)."""
    device = torch.device(device)
    if slabs is not None:
        net = _in_slabs(net, slabs, channels_last)
    out: np.ndarray | None = None
    with torch.no_grad():
        for done, tile in enumerate(tiles, start=1):
            x = torch.from_numpy(np.ascontiguousarray(image[(slice(None), *tile.source)]))
            x = x[None].to(device)
            if channels_last:
                x = as_channels_last(x)
            with autocast(precision, device):
                y = net(x)
            y = y[(0, slice(None), *tile.keep)].float().cpu().numpy()
            if out is None:
                out = np.empty((y.shape[0], *image.shape[1:]), dtype=np.float32)
            out[(slice(None), *tile.target)] = y
            if progress is not None:
                progress(done, len(tiles))
    assert out is not None
    return out


def _in_slabs(net: Callable[[torch.Tensor], torch.Tensor], axis: int,
              channels_last: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` run on the one-voxel slabs of its input along spatial ``axis`` as a batch:
    ``(1, C, D, H, W) -> (1, C', D, H, W)``, each slab computed alone."""
    dim = 2 + axis

    def run(x: torch.Tensor) -> torch.Tensor:
        batch = x.transpose(0, dim)  # (1, C, T, H, W) -> (T, C, 1, H, W) along axis 0
        batch = as_channels_last(batch) if channels_last else batch.contiguous()
        return net(batch).transpose(0, dim)

    return run
