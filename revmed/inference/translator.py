"""A trained RevGAN run on whole volumes: forward (F) or reverse (G), for super-resolution
and domain adaptation, in the volume's own units.

A translator whose checkpoint holds normalisation statistics runs with its instance norms
frozen, in a few large tiles whose result does not depend on the tiling
(``revmed.inference.tiles``, docs/inference.md; in slabs when it was trained on patches one
voxel thin, as selfsr's are); otherwise in blended windows (``revmed.inference.windows``). For
super-resolution the input is first put on the grid refined by the card's factors
(``revmed.transforms.upsample``), and the output keeps the input's physical extent and
direction with the finer spacing (``revmed.io.zoom_affine``).
In reverse (``G``: high to low resolution) the output is block-averaged back to the coarse
grid.

Outputs keep the input's full range. The network only sees intensities inside the card's
window (HU [-1150, 350] for chest CT), so it cannot say anything of bone at 1200 HU or metal at
3000 HU; where the input (on the output grid: interpolated for super-resolution, block-averaged
for ``G``) lies outside the window, the output is that input value, not the window's edge.
"""

from __future__ import annotations

import numpy as np

from revmed.errors import InputError
from revmed.inference.predictor import Predictor, Progress
from revmed.inference.tiles import plan_tiles, slab_axis, tile_voxels, tiled_predict
from revmed.io import Volume, zoom_affine
from revmed.runtime import inference_precision
from revmed.transforms import (denormalise, downsample, from_zscores, normalise, statistics_of,
                               upsample)


def keep_outside_window(out: np.ndarray, source: np.ndarray,
                        window: tuple[float, float]) -> np.ndarray:
    """``out`` ``(C, I, J, K)``, with the voxels where ``source`` (the input on the output
    grid, same shape) lies outside ``window`` taken from ``source``: what the network cannot
    see, it passes through (see the module doc). In place; returns ``out``."""
    lo, hi = window
    outside = (source < lo) | (source > hi)
    out[outside] = source[outside]
    return out


class Translator(Predictor):
    """A trained RevGAN: F (X -> Y) or, in reverse, G (Y -> X), in the volume's own units."""

    tasks = ("sr", "da")

    def predict(self, volume: Volume, reverse: bool = False, **options) -> Volume:
        return self.translate(volume, reverse=reverse, **options)

    def translate(self, volume: Volume, reverse: bool = False, overlap: float | None = None,
                  sw_batch_size: int | None = None, progress: Progress | None = None,
                  precision: str | None = None, tiling: str = "auto") -> Volume:
        """F (``reverse=False``) or G applied to ``volume``, in the volume's own units.

        ``tiling``: ``auto`` runs the network with its frozen norms in a few large tiles
        when the checkpoint holds their statistics (one evaluation per voxel plus the halo;
        the result does not depend on the tiles), else in blended windows; ``windows``
        always runs blended windows with instance norms, as checkpoints without statistics
        do. ``overlap``, ``sw_batch_size`` and ``precision`` default to the card's
        ``[infer]`` (``overlap`` and ``sw_batch_size`` are for windows).
        """
        if tiling not in ("auto", "windows"):
            raise InputError(f"tiling must be auto or windows, got {tiling!r}")
        data = self.card.data
        self._check_input(volume, reverse)
        source, affine = volume.array, volume.affine  # the input, in its units
        if data.refines_grid and not reverse:
            # interpolated in the input's units, then windowed: as training makes its inputs
            source = upsample(source, data.sr_factors, data.sr_upsample)
            affine = zoom_affine(volume.affine, data.sr_factors)
        stats_in, stats_out = statistics_of(data, reverse)
        image = normalise(source, data.intensity, data.window, stats_in)
        if tiling == "auto" and reverse in self.tiled:
            out = self._tiles(reverse, image, progress, precision, held=2 * source.nbytes)
        else:
            net = self.model.reverse if reverse else self.model
            out = self._windows(net, image, overlap, sw_batch_size, progress, precision)
        del image
        if data.refines_grid and reverse:
            out = downsample(out, data.sr_factors)
            source = downsample(source, data.sr_factors)
            affine = zoom_affine(volume.affine, [1.0 / f for f in data.sr_factors])
        if stats_out is not None:  # an exact affine inverse: nothing to clip
            out = from_zscores(out, stats_out)
        else:
            out = keep_outside_window(denormalise(np.clip(out, -1.0, 1.0), data.window),
                                      source, data.window)
        self._check_output(out, volume)
        meta = {k: v for k, v in volume.meta.items() if k in ("units", "modality")}
        return Volume(out, affine, source=volume.source, meta=meta)

    def _tiles(self, reverse: bool, image: np.ndarray, progress: Progress | None,
               precision: str | None, held: int) -> np.ndarray:
        """The frozen network of one direction over ``image`` in the fewest voxels the
        memory allows (``revmed.inference.tiles``)."""
        frozen, halo = self.tiled[reverse]
        net = frozen.reverse if reverse else frozen
        per_voxel = frozen.inference_bytes_per_voxel()
        slabs = slab_axis(self.card.patch_size)
        tiles = plan_tiles(image.shape[1:], halo, tile_voxels(per_voxel, self.device, held),
                           align=frozen.stride, slabs=slabs)
        return tiled_predict(net, image, tiles, self.device,
                             inference_precision(precision or self.card.infer.precision,
                                                 self.device),
                             self.tiles_channels_last, progress, slabs=slabs)
