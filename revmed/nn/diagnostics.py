"""Checks worth logging while training invertible networks."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def invertibility_error(module: nn.Module, x: torch.Tensor, reduction: str = "max") -> float:
    """``max |inverse(forward(x)) - x|`` of ``module`` (``reduction="mean"``: the mean), a float.

    Runs without a graph and in eval mode (dropout off: a random forward has no inverse),
    restoring each submodule's mode afterwards. Autocast, if the caller enabled it, applies.
    A forward that returns a tuple (a channel split) is passed to ``inverse`` unpacked.
    """
    if reduction not in ("max", "mean"):
        raise ValueError(f"reduction must be 'max' or 'mean', not {reduction!r}")
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        y = module(x)
        x_rec = module.inverse(*y) if isinstance(y, tuple) else module.inverse(y)
        error = (x_rec.double() - x.double()).abs()
        return (error.max() if reduction == "max" else error.mean()).item()
    finally:
        for m, training in modes:
            m.training = training


class SavedTensorMeter:
    """Bytes of the tensors that autograd saves for backward while the meter is active.

    Used as a context manager around a forward pass; counts each storage once (several saved
    tensors are often views of one storage) and skips the storages of ``exclude`` (pass the
    model's parameters to count activations only). The count is deterministic: it depends on
    the graph, not on the allocator.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self._excluded:
            self._seen.setdefault(key, storage.nbytes())
        return t

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
