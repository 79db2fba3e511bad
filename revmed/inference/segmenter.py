"""A trained segmentation network run on whole volumes: volume in, label map out, on the
same grid. Segmentation networks normalise over what they see, so they always run in blended
windows (``revmed.inference.windows``)."""

from __future__ import annotations

import numpy as np

from revmed.errors import InputError
from revmed.inference.predictor import Predictor, Progress
from revmed.io import Volume
from revmed.transforms import normalise


class Segmenter(Predictor):
    """A trained segmentation network: volume in, label map out (same grid), labelled by the
    checkpoint's label set (``revmed.regions``; BraTS for older checkpoints)."""

    tasks = ("seg",)
    output_dtype = np.uint8

    def predict(self, volume: Volume, reverse: bool = False, **options) -> Volume:
        if reverse:
            raise InputError(f"{self.source}: a segmentation model has no reverse direction")
        return self.segment(volume, **options)

    def segment(self, volume: Volume, overlap: float | None = None,
                sw_batch_size: int | None = None, progress: Progress | None = None,
                precision: str | None = None, tiling: str = "auto") -> Volume:
        """Label map ``(1, I, J, K)`` uint8 of ``volume`` ``(C, I, J, K)``, in its geometry.
        Segmentation networks normalise over what they see, so they always run in blended
        windows (``tiling`` is accepted for the common interface)."""
        self._check_input(volume)
        image = normalise(volume.array, self.card.data.intensity, self.card.data.window)
        logits = self._windows(self.model, image, overlap, sw_batch_size, progress, precision)
        self._check_output(logits, volume)
        labels = self.card.data.labels.to_labels(logits)
        return Volume(labels.astype(np.float32), volume.affine, source=volume.source,
                      meta={"units": "label"})
