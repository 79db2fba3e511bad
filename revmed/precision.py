"""Mixed precision: ``--precision fp32|bf16|fp16`` for training and inference.

Forward passes run under ``torch.autocast`` with the chosen dtype; weights, optimiser state and
checkpoints stay float32. fp16 training scales the losses with ``torch.amp.GradScaler`` so small
gradients do not flush to zero; bf16 has float32's exponent range and needs no scaler.

The memory-free backward rebuilds each coupling block's input from its output. In low
precision that rebuild is inexact (``x + f(y) - f(y)`` no longer cancels exactly), so the
trainer logs the core's reconstruction error each epoch (``core_recon_error`` in
``metrics.jsonl``); docs/benchmarks.md gives measured values per dtype.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (disabled, it passes losses through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
