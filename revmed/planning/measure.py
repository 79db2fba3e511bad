"""Measuring the peak memory of one training step of a preset on random data.

The step is the trainer's own (``revmed.engine.step.TrainingStep``), seeded as the trainer
seeds it, run twice on one batch; the second run is measured. On CUDA the peak is
``torch.cuda.max_memory_allocated`` over the second step (what the caching allocator handed
out, not what it reserved, nor the CUDA context), measured in this process. On the CPU each
measurement runs in a fresh process (``python -m revmed.planning``, the request as JSON on
stdin, see ``revmed.planning.__main__``) with glibc's ``MALLOC_MMAP_THRESHOLD_`` at 64 KiB, so
freed tensors go back to the kernel, and one thread: the peak is the rise of the
resident-memory high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) over the
second step, plus the bytes of the tensors held before it (weights, gradients, Adam's
moments, the batch, the pool). Where ``clear_refs`` cannot be written the high-water mark
since the process started (``ru_maxrss``) stands in for it.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from revmed.engine.setup import build_training_step
from revmed.engine.step import TrainingStep
from revmed.planning.training_setup import TrainingSetup, count_parameters
from revmed.preset import Preset
from revmed.regions import LabelSet
from revmed.sizes import shape_text

#: glibc serves allocations of this many bytes or more with their own mapping (CPU measurement).
MMAP_THRESHOLD = 64 << 10


@dataclass
class Measurement:
    """The measured peak (bytes) of one training step at ``patch`` (voxels per axis) x
    ``batch``, of a network of reversible ``depth`` and ``parameters`` trained parameters.

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


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def pool_tensors(step: TrainingStep) -> list[torch.Tensor]:
    """The generated volumes the objective's image pools hold (none without pools)."""
    pools = getattr(step.objective, "pools", {})
    return [t for pool in pools.values() for t in pool.items]


def held_tensors(step: TrainingStep, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Every tensor ``step`` keeps between steps: weights, gradients, optimiser state, the
    batch and the pool."""
    modules = [step.model, *step.critics.values()]
    held = [p for m in modules for p in m.parameters()]
    held += [p.grad for p in held if p.grad is not None]
    for opt in (step.opt_g, step.opt_d):
        if opt is not None:
            held += [v for state in opt.state.values() for v in state.values()
                     if isinstance(v, torch.Tensor)]
    return held + list(batch.values()) + pool_tensors(step)


def synthetic_batch(in_channels: int, out_channels: int, labels: LabelSet | None,
                    patch: Sequence[int], batch: int, device: torch.device,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors shaped like a training batch: ``X`` ``(B, in_channels, *patch)`` in
    [-1, 1], and either ``Y`` ``(B, out_channels, *patch)`` in [-1, 1] (``labels`` None: an
    image target) or an integer ``label`` map ``(B, 1, *patch)`` whose values are drawn
    evenly from ``labels.codes`` (the background and each label of the set)."""
    g = torch.Generator().manual_seed(seed)
    shape = tuple(int(n) for n in patch)
    out = {"X": torch.rand(batch, in_channels, *shape, generator=g) * 2 - 1}
    if labels is not None:
        codes = torch.tensor(labels.codes, dtype=torch.uint8)
        out["label"] = codes[torch.randint(0, len(codes), (batch, 1, *shape), generator=g)]
    else:
        out["Y"] = torch.rand(batch, out_channels, *shape, generator=g) * 2 - 1
    return {k: v.to(device) for k, v in out.items()}


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def _second_step_peak(step: TrainingStep, batch: dict[str, torch.Tensor]) -> int:
    """Bytes at the peak of ``step.step(batch)`` (the first step ran): see the module doc."""
    device = step.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step.step(batch)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    held = tensor_bytes(held_tensors(step, batch))
    base = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        high = lambda: _status_kib("VmHWM")  # noqa: E731
    except OSError:  # not allowed here: the high-water mark since the process started
        import resource

        high = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    step.step(batch)
    return held + max(0, high() - base) * 1024


def stand_in_labels(regions: int) -> LabelSet:
    """``regions`` disjoint regions, labels 1 to ``regions``: a segmentation step's memory
    depends on how many regions it predicts, not on how its data codes them."""
    return LabelSet(labels={f"region{i}": i for i in range(1, regions + 1)})


def step_labels(objective: str, out_channels: int, labels: LabelSet | None) -> LabelSet | None:
    """The label set a measured step of the ``[train]`` ``objective`` learns: ``labels`` (its
    data's, when known) or ``stand_in_labels(out_channels)``; None unless it segments."""
    if objective != "segmentation":
        return None
    return labels or stand_in_labels(out_channels)


def measure_here(preset: Preset, patch: Sequence[int], batch: int, device: torch.device,
                 labels: LabelSet | None = None) -> Measurement:
    """Measure one training step of ``preset`` at ``patch`` x ``batch`` in this process (the
    second of two steps on one batch). ``labels``: the label set a segmentation step learns
    and its batch draws from (``step_labels``)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
    torch.manual_seed(preset.train.seed)  # as the trainer seeds its step
    labels = step_labels(preset.train.objective, preset.data.out_channels, labels)
    step = build_training_step(preset, device, labels=labels)
    step.model.train()
    data = synthetic_batch(preset.data.in_channels, preset.data.out_channels, labels,
                           patch, batch, device)
    step.step(data)  # Adam's moments now exist; kernels and primitives are set up
    gc.collect()
    peak = _second_step_peak(step, data) - (before if cuda else 0)
    setup = TrainingSetup(preset.name, preset.patch.size, preset.model, preset.data,
                          preset.train)
    return Measurement(patch=[int(n) for n in patch], batch=int(batch), depth=setup.depth,
                       parameters=count_parameters(setup), peak=int(peak),
                       pool=tensor_bytes(pool_tensors(step)), device=device.type)


def measure_step(preset: Preset, patch: Sequence[int], batch: int,
                 device: torch.device | str = "cpu",
                 labels: LabelSet | None = None) -> Measurement:
    """The peak memory of one training step of ``preset`` at ``patch`` x ``batch``.

    On CUDA it is measured in this process; on the CPU in a fresh one (see the module doc).
    ``labels``: the label set a segmentation step learns, its data's when known, else a stand
    in with as many regions (``step_labels``; the planner reads no data).
    """
    device = torch.device(device)
    if device.type == "cuda":
        gc.collect()
        return measure_here(preset, patch, batch, device, labels)
    request = json.dumps({"preset": preset.to_dict(), "patch": list(patch), "batch": batch,
                          "labels": labels.to_dict() if labels is not None else None})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    # run where `python -m` finds this very revmed (not a `revmed` folder in the working one)
    home = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "revmed.planning"], input=request,
                          capture_output=True, text=True, env=env, cwd=home)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise RuntimeError(f"measuring {preset.name} at {shape_text(patch)} x {batch} "
                           f"failed: {tail}")
    return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))
