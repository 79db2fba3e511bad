"""The peak-memory model of a training step and its fit to measurements at small patches.

``peak = fixed + 16 x parameters + batch x voxels x per_voxel + pool`` (bytes): see
``revmed.planning`` for why each term is there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from revmed.planning.measure import Measurement
from revmed.planning.training_setup import TrainingSetup

#: Bytes one float32 parameter costs while training with Adam: weight, gradient, two moments.
BYTES_PER_PARAMETER = 16
#: Batch of the fit's measurements. On the CPU PyTorch runs a 3x3x3 convolution of batch 1
#: whose ``channels x depth x height`` is at most 20480 through im2col (``slow_conv3d``, its
#: columns 27 inputs in size) instead of the oneDNN path that batches of 2 or more, and larger
#: patches, take; small patches of batch 1 would overstate the cost per voxel (measured: 2950
#: against 1340 bytes per voxel for chestct-sr at 32^3 and 40^3).
FIT_BATCH = 2

#: ``measure(setup, patch, batch)``: one measured training step of ``setup`` at ``patch``
#: (voxels per axis) x ``batch``.
Measure = Callable[[TrainingSetup, Sequence[int], int], Measurement]


@dataclass
class PeakModel:
    """``peak = fixed + 16 x parameters + batch x voxels x per_voxel + pool`` (bytes;
    ``fixed`` in bytes, ``per_voxel`` in bytes per voxel of one batch item)."""

    fixed: float
    per_voxel: float

    def peak(self, setup: TrainingSetup, patch: Sequence[int], batch: int,
             parameters: int) -> int:
        """Predicted peak bytes of one training step of ``setup`` at ``patch`` x ``batch``
        with ``parameters`` trained parameters."""
        return int(self.fixed + BYTES_PER_PARAMETER * parameters
                   + batch * setup.voxels(patch) * self.per_voxel
                   + setup.pool_bytes(setup.padded(patch)))


def fit(setup: TrainingSetup, measurements: Sequence[Measurement]) -> PeakModel:
    """Least-squares ``fixed`` and ``per_voxel`` from measurements at two or more sizes."""
    xs = [m.batch * setup.voxels(m.patch) for m in measurements]
    ys = [m.peak - m.pool - BYTES_PER_PARAMETER * m.parameters for m in measurements]
    if len(set(xs)) < 2:
        raise ValueError("fitting needs measurements at two or more sizes")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
             / sum((x - mx) ** 2 for x in xs))
    if slope <= 0:
        raise RuntimeError(f"the measured peaks {[m.peak for m in measurements]} do not grow "
                           "with the patch; the measurement is not trustworthy here")
    return PeakModel(fixed=my - slope * mx, per_voxel=slope)


def fit_edges(setup: TrainingSetup, count: int = 3) -> list[int]:
    """Cubic patch edges of the fit: small, valid for the model, 8 (or its multiple) apart."""
    step = max(8, setup.patch_multiple)
    first = max(setup.smallest_edge, 16)
    first = -(-first // step) * step
    return [first + i * step for i in range(count)]


def measure_fit(setup: TrainingSetup, measure: Measure, edges: Sequence[int] | None = None,
                batch: int = FIT_BATCH, progress=None) -> tuple[PeakModel, list[Measurement]]:
    """Measure at small cubic patches (``fit_edges``) of batch ``FIT_BATCH`` and fit;
    ``progress(done, total, text)`` hears of each measurement.

    A RevGAN with ``depth = 0`` is measured at depth 1 (a core adds working memory that does
    not grow with further blocks), so its own prediction errs on the high side.
    """
    measured = setup.with_depth(max(setup.depth, 1))
    edges = list(edges or fit_edges(setup))
    results = []
    for i, edge in enumerate(edges):
        if progress is not None:
            progress(i, len(edges), f"{edge}^3 x {batch}")
        results.append(measure(measured, [edge] * 3, batch))
    if progress is not None:
        progress(len(edges), len(edges), "done")
    return fit(measured, results), results
