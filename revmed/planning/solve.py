"""Solving the fitted peak model for a memory size: the largest patch, batch and depth.

``plan`` measures a preset at small sizes and solves; ``make_plan`` solves a fitted model.
Each largest value changes one of patch (cubic edge), batch and depth and keeps the other two
at the preset's; a search doubles, then bisects, as the predicted peak grows with each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from revmed.errors import ConfigError, InputError
from revmed.planning.fit import BYTES_PER_PARAMETER, PeakModel, measure_fit
from revmed.planning.measure import Measurement, measure_step
from revmed.planning.training_setup import TrainingSetup, count_parameters
from revmed.preset import MAX_PATCH_SIZE, Preset
from revmed.regions import LabelSet
from revmed.sizes import format_bytes

#: The largest depth reported; beyond it the planner says "more than" this.
MAX_DEPTH = 1000


@dataclass
class Plan:
    """What fits in ``memory`` bytes; every ``peak`` is a prediction in bytes.

    ``largest_*`` change one of patch (cubic edge, a multiple of ``edge_step``), batch and depth
    and keep the preset's other two; each gives the predicted peak of its value and of the next
    larger one (which would not fit). ``largest_batch["batch"]`` is 0 and ``largest_depth`` None
    where nothing fits; ``largest_depth["capped"]`` says that more than ``MAX_DEPTH`` fit.
    """

    preset: str
    device: str
    memory: int
    depth_key: str
    model: dict[str, float]
    measurements: list[dict[str, Any]]
    preset_peak: dict[str, Any]
    largest_patch: dict[str, Any]
    largest_batch: dict[str, Any]
    largest_depth: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _largest(peak_of, start: int, step: int, memory: int, limit: int | None = None):
    """The largest ``start + k x step`` (k >= 0) whose ``peak_of`` is at most ``memory``, or
    None; ``peak_of`` increases. Doubling, then bisection; stops at ``limit``."""
    if peak_of(start) > memory:
        return None
    lo, hi = 0, 1  # in steps
    while peak_of(start + hi * step) <= memory:
        lo, hi = hi, hi * 2
        if limit is not None and start + lo * step >= limit:
            return limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if peak_of(start + mid * step) <= memory:
            lo = mid
        else:
            hi = mid
    value = start + lo * step
    return min(value, limit) if limit is not None else value


def largest_patch(setup: TrainingSetup, model: PeakModel, memory: int, params: int) -> dict:
    """The largest cubic patch at the setup's batch and ``params`` parameters; ``InputError``
    when even the smallest does not fit."""
    batch = setup.train.batch_size
    step = max(8, setup.patch_multiple)
    smallest = -(-setup.smallest_edge // step) * step

    def edge_peak(e: int) -> int:
        return model.peak(setup, [e] * 3, batch, params)

    limit = MAX_PATCH_SIZE // step * step  # the largest edge a preset may state
    edge = _largest(edge_peak, smallest, step, memory, limit=limit)
    if edge is None:
        raise InputError(f"memory {format_bytes(memory)}: too small for preset "
                         f"{setup.name}: its smallest patch ({smallest}^3, batch {batch}) "
                         f"needs about {format_bytes(edge_peak(smallest))} for one training step",
                         option="memory")
    return dict(edge=edge, patch=[edge] * 3, edge_step=step, peak=edge_peak(edge),
                next_peak=edge_peak(edge + step), capped=edge >= limit)


def largest_batch(setup: TrainingSetup, model: PeakModel, memory: int, params: int) -> dict:
    """The largest batch at the setup's patch and ``params`` parameters (0: none fits)."""
    def batch_peak(b: int) -> int:
        return model.peak(setup, setup.patch, b, params)

    b = _largest(batch_peak, 1, 1, memory) or 0
    return dict(batch=b, peak=batch_peak(b) if b else None, next_peak=batch_peak(b + 1))


def largest_depth(setup: TrainingSetup, model: PeakModel, memory: int,
                  params: int) -> dict | None:
    """The largest reversible depth at the setup's patch and batch (None: none fits);
    ``params`` are the parameters at the setup's depth."""
    depth = setup.depth
    # parameters are linear in the depth: params(d) = params(depth) + (d - depth) x per_block
    per_block = count_parameters(setup.with_depth(depth + 1)) - params

    def depth_peak(d: int) -> int:
        return model.peak(setup, setup.patch, setup.train.batch_size,
                          params + (d - depth) * per_block)

    d = _largest(depth_peak, setup.family.min_depth, 1, memory, limit=MAX_DEPTH)
    if d is None:
        return None
    capped = d >= MAX_DEPTH and depth_peak(MAX_DEPTH + 1) <= memory
    return dict(depth=d, capped=capped, parameters=params + (d - depth) * per_block,
                peak=depth_peak(d), next_peak=depth_peak(d + 1))


def _notes(setup: TrainingSetup, device: str) -> list[str]:
    """What the plan's numbers are and are not."""
    trained = "generator and critics" if setup.train.uses_critics else "the model"
    notes = [f"the prediction is for one training step ({trained}, with Adam's state); "
             "validation and inference windows use less"]
    if device == "cuda":
        notes.append("CUDA: memory the caching allocator hands out; the CUDA context and "
                     "fragmentation take some hundreds of MiB more")
    if not setup.model.memory_saving:
        notes.append("model.memory_saving is false: activations grow with depth, so no depth "
                     "is predicted")
    return notes


def make_plan(setup: TrainingSetup, memory: int, model: PeakModel,
              measurements: Sequence[Measurement], device: str) -> Plan:
    """Solve ``model`` for ``memory`` bytes (see ``Plan``); raises ``InputError`` when not
    even the smallest patch fits at the setup's batch and depth. ``device``: where the
    measurements ran (``cpu`` or ``cuda``)."""
    patch, batch = list(setup.patch), setup.train.batch_size
    params = count_parameters(setup)
    notes = _notes(setup, device)
    patch_plan = largest_patch(setup, model, memory, params)
    batch_plan = largest_batch(setup, model, memory, params)
    # without memory saving activations grow with depth: no depth is predicted (a note says so)
    depth_plan = (largest_depth(setup, model, memory, params) if setup.model.memory_saving
                  else None)
    peak = model.peak(setup, patch, batch, params)
    preset_peak = dict(patch=patch, batch=batch, depth=setup.depth, parameters=params,
                       peak=peak, fits=peak <= memory)
    return Plan(preset=setup.name, device=device, memory=memory,
                depth_key=f"model.{setup.depth_key}",
                model={"fixed": model.fixed, "per_voxel": model.per_voxel,
                       "bytes_per_parameter": BYTES_PER_PARAMETER,
                       "pool_bytes_at_preset": setup.pool_bytes(setup.padded(patch))},
                measurements=[asdict(m) for m in measurements], preset_peak=preset_peak,
                largest_patch=patch_plan, largest_batch=batch_plan,
                largest_depth=depth_plan, notes=notes)


def plan(preset: Preset, memory: int, device: torch.device | str = "cpu",
         progress=None, labels: LabelSet | None = None) -> Plan:
    """Measure ``preset`` at small sizes on ``device`` and plan for ``memory`` bytes.

    ``labels``: the label set a segmentation preset's data declares, when known; else a stand
    in with as many regions (the memory depends on their number only; the planner reads no
    data). ``progress(done, total, text)`` hears of each measurement.
    """
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device}: the planner measures on cpu or cuda only",
                          option="device")
    setup = TrainingSetup(preset.name, tuple(preset.patch.size), preset.model, preset.data,
                          preset.train)

    def measure(measured: TrainingSetup, patch: Sequence[int], batch: int) -> Measurement:
        return measure_step(replace(preset, model=measured.model), patch, batch, device, labels)

    model, measurements = measure_fit(setup, measure, progress=progress)
    return make_plan(setup, memory, model, measurements, device.type)
