"""Training on several processes with PyTorch's DistributedDataParallel (``torchrun``).

``torchrun --nproc-per-node N -m revmed train ...`` starts N copies of the command with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set; ``Distributed.from_env`` reads them and joins
the process group (NCCL on GPUs, one per process; gloo on the CPU). The trainer then:

* splits every batch of the preset's ``train.batch_size`` into equal slices, one per process
  (``batch[rank::world_size]``), so N processes train on the same global batches as one
  process would, and DDP averages the gradients of the slices: the gradient of the batch mean;
* runs each optimisation step's generator losses in one forward call of a DDP-wrapped module
  (``LossModule``), because DDP synchronises gradients per forward/backward pair and a RevGAN
  step uses the generator in both directions;
* agrees on stopping (Ctrl-C, time limit) by an all-reduce each step, so no process waits
  forever in a collective the others have left;
* writes checkpoints, ``metrics.jsonl`` and progress from rank 0 only, and validates there;
* checks at the end that every process holds the same weights (``rank_weight_spread`` in the
  returned record: the largest difference of any weight between two processes).

The image pool of unpaired training is per process (seeded by rank), so unpaired runs on N
processes differ from a single-process run; paired and segmentation runs match it to
floating-point summation order.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from revmed.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed | None:
        """The job ``torchrun`` describes in the environment, or None for a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return None
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def device_for(self, device: torch.device) -> torch.device:
        """One GPU per process (``cuda:LOCAL_RANK``), or the CPU."""
        if device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def join(self, device: torch.device, timeout_s: float = 1800.0) -> None:
        """Join the process group: NCCL for CUDA devices, gloo otherwise."""
        if dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "gloo" and not dist.is_gloo_available():
            raise ConfigError("distributed training on the CPU needs PyTorch with gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=self.rank, world_size=self.world_size,
                                timeout=timedelta(seconds=timeout_s))

    def leave(self, wait_for_others: bool = False) -> None:
        """Leave the process group. With ``wait_for_others`` (a run that ended normally),
        first wait until every process has got here, so that none closes its connections
        while another still uses them; gloo waits at most a minute (a process that failed
        does not keep the others), NCCL for the job's timeout."""
        if not dist.is_initialized():
            return
        if wait_for_others:
            try:
                if dist.get_backend() == "gloo":
                    dist.monitored_barrier(timeout=timedelta(seconds=60))
                else:
                    dist.barrier()
            except RuntimeError:  # another process failed or left first: leave all the same
                pass
        dist.destroy_process_group()

    def shard(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This process's slice of a global batch: ``(B, ...) -> (B / world_size, ...)``."""
        return {k: v[self.rank::self.world_size] for k, v in batch.items()}

    def any(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over all processes (one all-reduce)."""
        values = torch.tensor([float(f) for f in flags])
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(v) for v in values.tolist()]

    def mean(self, logs: dict[str, float]) -> dict[str, float]:
        """Each value averaged over all processes (the same keys everywhere)."""
        keys = sorted(logs)
        values = torch.tensor([logs[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return {k: v / self.world_size for k, v in zip(keys, values.tolist())}

    def spread(self, tensors: list[torch.Tensor]) -> float:
        """The largest difference of any element of ``tensors`` between two processes (0.0
        when every process holds the same values, as DDP promises for the weights)."""
        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
        high, low = flat.clone(), flat.clone()
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        return float((high - low).max()) if flat.numel() else 0.0


class LossModule(nn.Module):
    """``forward(*args)`` = ``step(model, *args)``: a loss computation as one module call.

    DDP wraps this (the model is its only registered child) so that a step that applies the
    model several times (F and G, cycles) is one forward pass to DDP. ``extra`` (critics) is
    held outside the module tree, so DDP neither syncs nor broadcasts it.
    """

    def __init__(self, model: nn.Module, step: Callable, extra: object = None) -> None:
        super().__init__()
        self.model = model
        self._step, self._extra = step, extra

    def forward(self, *args):
        if self._extra is None:
            return self._step(self.model, *args)
        return self._step(self.model, self._extra, *args)


def wrap(module: nn.Module, device: torch.device, job: Distributed | None) -> nn.Module:
    """``module`` itself for one process; DistributedDataParallel around it for several."""
    if job is None:
        return module
    from torch.nn.parallel import DistributedDataParallel

    # A weight with a dimension of size 1 (a (C, 1, k, k, k) or (1, C, 1, 1, 1) convolution
    # weight) has two valid strides for that dimension, and in channels-last order the
    # convolution may hand back a gradient with the other one. DDP then warns that the
    # gradient's strides differ from its bucket's and copies it: correct, and only for those
    # few small weights, so the warning says nothing the user can act on.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)
