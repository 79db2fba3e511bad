"""Planning memory: what patch, batch and depth of a preset fit in a given memory.

The planner measures the peak memory of one training step of the preset's model and objective
(the generator step and, for the RevGAN, the critics' step, with Adam's moments in place) at a
few small patch sizes on random tensors, fits a model to the measurements and solves it for
the memory given. The model::

    peak(V, B, D) = fixed + 16 x parameters(D) + B x V x per_voxel  (+ the image pool)

``V`` is the voxels of a patch, ``B`` the batch and ``D`` the reversible depth (the RevGAN
core's ``model.depth``, the iUNet's ``model.blocks_per_scale``). Each float32 parameter costs
16 bytes while training: the weight, its gradient and Adam's two moments. ``per_voxel`` is
what one voxel of one batch item costs: activations, gradients and temporaries, summed over
every channel. It does not depend on the depth: memory-free backpropagation rebuilds each
block's activations in backward instead of storing them, so a deeper core needs only its
parameters (``test_planner`` checks this). ``fixed`` absorbs what depends on neither. With
``model.memory_saving = false`` activations do grow with depth and the planner predicts no
depth.

The CycleGAN objective keeps a pool of ``pool_size`` generated volumes per domain for the
critics (``ImagePool``: each a copy of one generated volume), so the pool is counted as
``pool_size x (in + out channels) x V x 4`` bytes, its size once full.

Measurement. On CUDA: ``torch.cuda.max_memory_allocated`` over the second step (what the
caching allocator handed out, not what it reserved, nor the CUDA context). On the CPU each
measurement runs in a fresh process (``python -m revmed.planner``, the preset on stdin) with
glibc's ``MALLOC_MMAP_THRESHOLD_`` at 64 KiB, so freed tensors go back to the kernel, and one
thread: the peak is the rise of the resident-memory high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) over the second step, plus the bytes of the tensors held before it
(weights, gradients, Adam's moments, the batch, the pool). Where ``clear_refs`` cannot be
written the high-water mark since the process started (``ru_maxrss``) stands in for it.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from revmed.config import preset_from_dict
from revmed.engine.setup import build_training_step
from revmed.engine.step import TrainingStep
from revmed.errors import ConfigError, InputError
from revmed.models import build_critics, build_model, get_family, model_spec
from revmed.preset import MAX_PATCH_SIZE, Preset
from revmed.regions import LabelSet
from revmed.sizes import format_bytes, shape_text

#: Bytes one float32 parameter costs while training with Adam: weight, gradient, two moments.
BYTES_PER_PARAMETER = 16
#: Bytes of one float32 value (images, generated volumes in the pool).
FLOAT32 = 4
#: The largest depth reported; beyond it the planner says "more than" this.
MAX_DEPTH = 1000
#: Batch of the fit's measurements. On the CPU PyTorch runs a 3x3x3 convolution of batch 1
#: whose ``channels x depth x height`` is at most 20480 through im2col (``slow_conv3d``, its
#: columns 27 inputs in size) instead of the oneDNN path that batches of 2 or more, and larger
#: patches, take; small patches of batch 1 would overstate the cost per voxel (measured: 2950
#: against 1340 bytes per voxel for chestct-sr at 32^3 and 40^3).
FIT_BATCH = 2
#: glibc serves allocations of this many bytes or more with their own mapping (CPU measurement).
MMAP_THRESHOLD = 64 << 10

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def parse_memory(text: str) -> int:
    """``"24GiB"`` -> bytes. Binary units (``KiB MiB GiB TiB``, or ``K M G T``), decimal units
    (``kB MB GB TB``), or plain bytes; a decimal point is allowed (``1.5TiB``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*", str(text),
                         re.IGNORECASE)
    if not match:
        raise InputError(f"memory {text}: expected a size such as 24GiB, 500MiB, 1.5TiB or "
                         "a number of bytes", option="memory")
    number, prefix, binary, unit_b = match.groups()
    prefix = prefix.lower()
    if binary and not prefix:
        raise InputError(f"memory {text}: expected a size such as 24GiB, 500MiB, 1.5TiB or "
                         "a number of bytes", option="memory")
    # "G", "GiB" and "Gi" are binary; "GB" is decimal
    key = prefix + ("b" if unit_b and prefix and not binary else "")
    value = int(float(number) * _UNITS[key])
    if value <= 0:
        raise InputError(f"memory {text}: must be more than zero bytes", option="memory")
    return value


# --- the preset's pieces ------------------------------------------------------------------------

def depth_key(preset: Preset) -> str:
    """The model key that sets the reversible depth (``depth``, ``blocks_per_scale``)."""
    return get_family(preset.model.kind).depth_key


def depth_of(preset: Preset) -> int:
    """The preset's reversible depth."""
    return int(getattr(preset.model, depth_key(preset)))


def with_depth(preset: Preset, depth: int) -> Preset:
    """``preset`` with the reversible depth set to ``depth``."""
    return replace(preset, model=replace(preset.model, **{depth_key(preset): int(depth)}))


def patch_multiple(preset: Preset) -> int:
    """Patch sizes the model runs at unpadded are multiples of this (iUNet: 2**(scales-1))."""
    return get_family(preset.model.kind).patch_multiple(preset.model)


def smallest_edge(preset: Preset) -> int:
    """The smallest cubic patch edge the preset can train on (the critic's need, the model's
    multiple)."""
    need = 3 * 2 ** preset.model.disc_layers if preset.train.uses_critics else 1
    m = patch_multiple(preset)
    return max(m, -(-need // m) * m)


def _padded(preset: Preset, patch: Sequence[int]) -> list[int]:
    m = patch_multiple(preset)
    return [-(-int(n) // m) * m for n in patch]


def voxels(preset: Preset, patch: Sequence[int]) -> int:
    """Voxels the network works on for a patch (iUNet: after padding to its multiple)."""
    return math.prod(_padded(preset, patch))


def count_parameters(preset: Preset) -> int:
    """Parameters trained: the generator's and, when the objective uses them, the critics'."""
    kind, kwargs = model_spec(preset)
    with torch.device("meta"):
        modules = [build_model(kind, **kwargs)]
        if preset.train.uses_critics:
            smallest = smallest_edge(preset)  # the critic's size does not depend on the patch
            sized = replace(preset, patch=replace(
                preset.patch, size=tuple(max(n, smallest) for n in preset.patch.size)))
            modules += list(build_critics(sized).values())
    return sum(p.numel() for m in modules for p in m.parameters())


def pool_bytes(preset: Preset, patch: Sequence[int], batch: int) -> int:
    """Bytes of the CycleGAN image pools once full (0 for other objectives)."""
    train, data = preset.train, preset.data
    if train.objective != "unpaired" or not train.uses_critics:
        return 0
    return (train.pool_size * (data.in_channels + data.out_channels)
            * math.prod(patch) * FLOAT32)


def synthetic_batch(preset: Preset, patch: Sequence[int], batch: int,
                    device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors shaped like a training batch: ``X`` ``(B, in_channels, *patch)`` in
    [-1, 1], and ``Y`` ``(B, out_channels, *patch)`` or, for segmentation, an integer
    ``label`` ``(B, 1, *patch)`` with the values of ``stand_in_labels``."""
    g = torch.Generator().manual_seed(seed)
    data, shape = preset.data, tuple(int(n) for n in patch)
    out = {"X": torch.rand(batch, data.in_channels, *shape, generator=g) * 2 - 1}
    if preset.train.objective == "segmentation":
        count = data.out_channels + 1  # the background and one label per region
        out["label"] = torch.randint(0, count, (batch, 1, *shape), generator=g,
                                     dtype=torch.uint8)
    else:
        out["Y"] = torch.rand(batch, data.out_channels, *shape, generator=g) * 2 - 1
    return {k: v.to(device) for k, v in out.items()}


def stand_in_labels(regions: int) -> LabelSet:
    """``regions`` disjoint regions, labels 1 to ``regions``: a segmentation step's memory
    depends on how many regions it predicts, not on how its data codes them."""
    return LabelSet(labels={f"region{i}": i for i in range(1, regions + 1)})


def _seeded_step(preset: Preset, device: torch.device) -> TrainingStep:
    """The trainer's own step (``revmed.engine.step``), seeded as the trainer seeds it."""
    torch.manual_seed(preset.train.seed)
    labels = (stand_in_labels(preset.data.out_channels)
              if preset.train.objective == "segmentation" else None)
    step = build_training_step(preset, device, labels=labels)
    step.model.train()
    return step


def _pool_tensors(step: TrainingStep) -> list[torch.Tensor]:
    pools = getattr(step.objective, "pools", {})
    return [t for pool in pools.values() for t in pool.items]


def _held_tensors(step: TrainingStep, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Every tensor ``step`` keeps between steps: weights, gradients, optimiser state, the
    batch and the pool."""
    modules = [step.model, *step.critics.values()]
    held = [p for m in modules for p in m.parameters()]
    held += [p.grad for p in held if p.grad is not None]
    for opt in (step.opt_g, step.opt_d):
        if opt is not None:
            held += [v for state in opt.state.values() for v in state.values()
                     if isinstance(v, torch.Tensor)]
    return held + list(batch.values()) + _pool_tensors(step)


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


# --- measuring ----------------------------------------------------------------------------------

@dataclass
class Measurement:
    """The measured peak (bytes) of one training step at ``patch`` x ``batch``.

    ``pool`` is the bytes of the image pool at the end of the step (part of ``peak``; the fit
    takes it out and counts the full pool instead).
    """

    patch: list[int]
    batch: int
    depth: int
    parameters: int
    peak: int
    pool: int = 0
    device: str = "cpu"


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def _measure_here(preset: Preset, patch: Sequence[int], batch: int,
                  device: torch.device) -> Measurement:
    """Measure in this process: the second of two steps on the same batch."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
    runner = _seeded_step(preset, device)
    data = synthetic_batch(preset, patch, batch, device)
    runner.step(data)  # Adam's moments now exist; kernels and primitives are set up
    gc.collect()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        runner.step(data)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        held = tensor_bytes(_held_tensors(runner, data))
        base = _status_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            high = lambda: _status_kib("VmHWM")  # noqa: E731
        except OSError:  # not allowed here: the high-water mark since the process started
            import resource

            high = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
        runner.step(data)
        peak = held + max(0, high() - base) * 1024
    return Measurement(patch=[int(n) for n in patch], batch=int(batch),
                       depth=depth_of(preset),
                       parameters=count_parameters(preset), peak=int(peak),
                       pool=tensor_bytes(_pool_tensors(runner)), device=device.type)


def measure_step(preset: Preset, patch: Sequence[int], batch: int,
                 device: torch.device | str = "cpu") -> Measurement:
    """The peak memory of one training step of ``preset`` at ``patch`` x ``batch``.

    On CUDA it is measured in this process; on the CPU in a fresh one (see the module doc).
    """
    device = torch.device(device)
    if device.type == "cuda":
        gc.collect()
        return _measure_here(preset, patch, batch, device)
    request = json.dumps({"preset": preset.to_dict(), "patch": list(patch), "batch": batch})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    # run where `python -m` finds this very revmed (not a `revmed` folder in the working one)
    home = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "revmed.planner"], input=request,
                          capture_output=True, text=True, env=env, cwd=home)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise RuntimeError(f"measuring {preset.name} at {shape_text(patch)} x {batch} "
                           f"failed: {tail}")
    return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))


# --- the model ----------------------------------------------------------------------------------

@dataclass
class PeakModel:
    """``peak = fixed + 16 x parameters + batch x voxels x per_voxel + pool`` (bytes)."""

    fixed: float
    per_voxel: float

    def peak(self, preset: Preset, patch: Sequence[int], batch: int,
             parameters: int) -> int:
        """Predicted peak bytes of one training step of ``preset`` at these sizes."""
        return int(self.fixed + BYTES_PER_PARAMETER * parameters
                   + batch * voxels(preset, patch) * self.per_voxel
                   + pool_bytes(preset, _padded(preset, patch), batch))


def fit(preset: Preset, measurements: Sequence[Measurement]) -> PeakModel:
    """Least-squares ``fixed`` and ``per_voxel`` from measurements at two or more sizes."""
    xs = [m.batch * voxels(preset, m.patch) for m in measurements]
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


# --- the plan -----------------------------------------------------------------------------------

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


def fit_edges(preset: Preset, count: int = 3) -> list[int]:
    """Cubic patch edges of the fit: small, valid for the model, 8 (or its multiple) apart."""
    step = max(8, patch_multiple(preset))
    first = max(smallest_edge(preset), 16)
    first = -(-first // step) * step
    return [first + i * step for i in range(count)]


def measure_fit(preset: Preset, device: torch.device | str = "cpu",
                edges: Sequence[int] | None = None, batch: int = FIT_BATCH,
                progress=None) -> tuple[PeakModel, list[Measurement]]:
    """Measure at small cubic patches (``fit_edges``) of batch ``FIT_BATCH`` and fit.

    A RevGAN with ``depth = 0`` is measured at depth 1 (a core adds working memory that does
    not grow with further blocks), so its own prediction errs on the high side.
    """
    measured = with_depth(preset, max(depth_of(preset), 1))
    edges = list(edges or fit_edges(preset))
    results = []
    for i, edge in enumerate(edges):
        if progress is not None:
            progress(i, len(edges), f"{edge}^3 x {batch}")
        results.append(measure_step(measured, [edge] * 3, batch, device))
    if progress is not None:
        progress(len(edges), len(edges), "done")
    return fit(measured, results), results


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


def _largest_patch(preset: Preset, model: PeakModel, memory: int, params: int) -> dict:
    """The largest cubic patch at the preset's batch and depth; ``InputError`` when even the
    smallest does not fit."""
    batch = preset.train.batch_size
    step = max(8, patch_multiple(preset))
    smallest = -(-smallest_edge(preset) // step) * step

    def edge_peak(e: int) -> int:
        return model.peak(preset, [e] * 3, batch, params)

    limit = MAX_PATCH_SIZE // step * step  # the largest edge a preset may state
    edge = _largest(edge_peak, smallest, step, memory, limit=limit)
    if edge is None:
        raise InputError(f"memory {format_bytes(memory)}: too small for preset "
                         f"{preset.name}: its smallest patch ({smallest}^3, batch {batch}) "
                         f"needs about {format_bytes(edge_peak(smallest))} for one training step",
                         option="memory")
    return dict(edge=edge, patch=[edge] * 3, edge_step=step, peak=edge_peak(edge),
                next_peak=edge_peak(edge + step), capped=edge >= limit)


def _largest_depth(preset: Preset, model: PeakModel, memory: int, params: int) -> dict | None:
    """The largest reversible depth at the preset's patch and batch (None: none fits)."""
    depth = depth_of(preset)
    # parameters are linear in the depth: params(d) = params(depth) + (d - depth) x per_block
    per_block = count_parameters(with_depth(preset, depth + 1)) - params

    def depth_peak(d: int) -> int:
        return model.peak(preset, preset.patch.size, preset.train.batch_size,
                          params + (d - depth) * per_block)

    least = get_family(preset.model.kind).min_depth
    d = _largest(depth_peak, least, 1, memory, limit=MAX_DEPTH)
    if d is None:
        return None
    capped = d >= MAX_DEPTH and depth_peak(MAX_DEPTH + 1) <= memory
    return dict(depth=d, capped=capped, parameters=params + (d - depth) * per_block,
                peak=depth_peak(d), next_peak=depth_peak(d + 1))


def make_plan(preset: Preset, memory: int, model: PeakModel,
              measurements: Sequence[Measurement], device: str) -> Plan:
    """Solve ``model`` for ``memory`` bytes (see ``Plan``); raises ``InputError`` when not
    even the smallest patch fits at the preset's batch and depth."""
    patch, batch = list(preset.patch.size), preset.train.batch_size
    params = count_parameters(preset)
    trained = "generator and critics" if preset.train.uses_critics else "the model"
    notes = [f"the prediction is for one training step ({trained}, with Adam's state); "
             "validation and inference windows use less"]
    if device == "cuda":
        notes.append("CUDA: memory the caching allocator hands out; the CUDA context and "
                     "fragmentation take some hundreds of MiB more")
    largest_patch = _largest_patch(preset, model, memory, params)

    def batch_peak(b: int) -> int:
        return model.peak(preset, patch, b, params)

    b = _largest(batch_peak, 1, 1, memory) or 0
    largest_batch = dict(batch=b, peak=batch_peak(b) if b else None, next_peak=batch_peak(b + 1))
    largest_depth = None
    if not preset.model.memory_saving:
        notes.append("model.memory_saving is false: activations grow with depth, so no depth "
                     "is predicted")
    else:
        largest_depth = _largest_depth(preset, model, memory, params)
    preset_peak = dict(patch=patch, batch=batch, depth=depth_of(preset), parameters=params,
                       peak=batch_peak(batch), fits=batch_peak(batch) <= memory)
    return Plan(preset=preset.name, device=device, memory=memory,
                depth_key=f"model.{depth_key(preset)}",
                model={"fixed": model.fixed, "per_voxel": model.per_voxel,
                       "bytes_per_parameter": BYTES_PER_PARAMETER,
                       "pool_bytes_at_preset": pool_bytes(preset, _padded(preset, patch), batch)},
                measurements=[asdict(m) for m in measurements], preset_peak=preset_peak,
                largest_patch=largest_patch, largest_batch=largest_batch,
                largest_depth=largest_depth, notes=notes)


def plan(preset: Preset, memory: int, device: torch.device | str = "cpu",
         progress=None) -> Plan:
    """Measure ``preset`` at small sizes on ``device`` and plan for ``memory`` bytes."""
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device}: the planner measures on cpu or cuda only",
                          option="device")
    model, measurements = measure_fit(preset, device, progress=progress)
    return make_plan(preset, memory, model, measurements, device.type)


def _worker() -> None:
    """``python -m revmed.planner``: one CPU measurement; the request is JSON on stdin."""
    request = json.loads(sys.stdin.read())
    torch.set_num_threads(1)
    preset = preset_from_dict(request["preset"], "the planner's request")
    result = _measure_here(preset, request["patch"], request["batch"], torch.device("cpu"))
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    _worker()
