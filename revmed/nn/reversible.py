"""ReversibleSequence: backpropagation through invertible blocks without stored activations.

With ``memory_saving=True`` a training forward pass runs all blocks inside one
:class:`torch.autograd.Function` that keeps only the sequence's output. Its backward walks
the blocks in reverse; each block's backward step rebuilds the block's input from its output
and turns dL/d(output) into dL/d(input) and parameter gradients (see
:class:`~revmed.nn.InvertibleModule`). Activation memory is therefore that of one block,
whatever the depth.

The parameters are inputs of the Function and their gradients are returned from its
backward, so they reach the graph's ``AccumulateGrad`` nodes like any other gradient: hooks,
``torch.autograd.grad`` and DistributedDataParallel see them as usual.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from revmed.nn.invertible import InvertibleModule, trainable
from revmed.nn.replay import Tape, recording


class ReversibleSequence(nn.Module):
    """Invertible blocks applied in order; ``inverse`` applies their inverses in reverse order.

    Args:
        blocks: :class:`~revmed.nn.InvertibleModule` instances (a block may appear twice).
        memory_saving: keep no intermediate activations for backward (see the module doc).
            ``False`` is plain autograd: the reference, and the "naive" baseline.
        preserve_rng_state: record the RNG state before every sub-network call so that random
            layers (dropout) draw the same numbers when re-run in the backward pass.

    Shapes are whatever the blocks make of them; for couplings ``(B, C, D, H, W)`` in and out.
    Both directions are memory-free, also when they appear in one graph with shared
    parameters (a CycleGAN cycle). Double backward is not supported.
    """

    def __init__(self, blocks: Iterable[InvertibleModule], memory_saving: bool = True,
                 preserve_rng_state: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        for i, block in enumerate(self.blocks):
            if not isinstance(block, InvertibleModule):
                raise TypeError(f"block {i} ({type(block).__name__}) is not an InvertibleModule")
        self.memory_saving = memory_saving
        self.preserve_rng_state = preserve_rng_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, inverse=False)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._run(y, inverse=True)

    def _run(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        params = trainable(self)
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if self.memory_saving and needs_graph and len(self.blocks) > 0:
            return _ReversibleFunction.apply(x, self, inverse, *params)
        for block in _ordered(self.blocks, inverse):
            x = block.inverse(x) if inverse else block(x)
        return x

    def extra_repr(self) -> str:
        return f"memory_saving={self.memory_saving}"


def _ordered(blocks: nn.ModuleList, inverse: bool) -> list[InvertibleModule]:
    return list(reversed(blocks)) if inverse else list(blocks)


class _ReversibleFunction(torch.autograd.Function):
    """All blocks of a sequence in one direction; saves the output and one Tape per block."""

    @staticmethod
    def forward(ctx, x, seq: ReversibleSequence, inverse: bool, *params):
        blocks = _ordered(seq.blocks, inverse)
        tapes = []
        with torch.no_grad():
            for block in blocks:
                tape = Tape(x.device, rng=seq.preserve_rng_state)
                with recording(tape):
                    x = block.inverse(x) if inverse else block(x)
                tapes.append(tape)
        ctx.save_for_backward(x)
        ctx.blocks, ctx.tapes, ctx.inverse, ctx.params = blocks, tapes, inverse, params
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        slot = {id(p): i for i, p in enumerate(ctx.params)}
        param_grads: list[torch.Tensor | None] = [None] * len(ctx.params)
        for block, tape in zip(reversed(ctx.blocks), reversed(ctx.tapes)):
            step = block.inverse_backward_pass if ctx.inverse else block.backward_pass
            out, grad, pairs = step(out, grad, tape)
            for p, g in pairs:
                i = slot[id(p)]
                param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
        return (grad, None, None, *param_grads)
