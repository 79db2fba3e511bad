"""ReversibleSequence: backpropagation through invertible blocks without stored activations.

With ``memory_saving=True`` a training forward pass runs each block inside its own
:class:`torch.autograd.Function` node, without a graph and without saving anything; only the
last node keeps the sequence's output. In the backward pass each node receives its block's
output from the node after it (the last one from its saved tensor), and the block's backward
step (see :class:`~revmed.nn.InvertibleModule`) rebuilds the block's input, dL/d(input) and
the parameter gradients. The node hands the rebuilt input to the node before it and returns
the gradients. Activation memory is that of one block, whatever the depth: one output, one
gradient and one sub-network's graph.

The parameters are inputs of their block's node and their gradients are returned from its
backward, so they reach the graph's ``AccumulateGrad`` nodes like any other gradient, block by
block: hooks, ``torch.autograd.grad`` and DistributedDataParallel (which starts reducing a
bucket as soon as its gradients are ready) see them as usual.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from revmed.nn.coupling import run_couplings
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
        blocks = _ordered(self.blocks, inverse)
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if self.memory_saving and needs_graph:
            chain = _Chain(len(blocks), inverse, self.preserve_rng_state)
            for k, block in enumerate(blocks):
                x = _BlockFunction.apply(x, block, chain, k, *trainable(block))
            return x
        if not torch.is_grad_enabled():
            y = run_couplings(self.blocks, x, inverse)
            if y is not None:
                return y
        for block in blocks:
            x = block.inverse(x) if inverse else block(x)
        return x

    def extra_repr(self) -> str:
        return f"memory_saving={self.memory_saving}"


def _ordered(blocks: nn.ModuleList, inverse: bool) -> list[InvertibleModule]:
    return list(reversed(blocks)) if inverse else list(blocks)


class _Chain:
    """One memory-saving pass through a sequence, shared by its blocks' autograd nodes.

    ``rebuilt[k]`` is where node ``k + 1`` leaves the output of block ``k`` that it rebuilt;
    node ``k`` takes it from there (a node runs only after the nodes that consume its output).
    """

    def __init__(self, n: int, inverse: bool, preserve_rng_state: bool) -> None:
        self.n, self.inverse, self.preserve_rng_state = n, inverse, preserve_rng_state
        self.rebuilt: list[torch.Tensor | None] = [None] * n


class _BlockFunction(torch.autograd.Function):
    """One block of a memory-saving pass; saves only the sequence's output (in the last node)."""

    @staticmethod
    def forward(ctx, x, block: InvertibleModule, chain: _Chain, k: int, *params):
        ctx.tape = Tape(x.device, rng=chain.preserve_rng_state)
        with torch.no_grad(), recording(ctx.tape):
            y = block.inverse(x) if chain.inverse else block(x)
        ctx.block, ctx.chain, ctx.k, ctx.params = block, chain, k, params
        if k == chain.n - 1:
            ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        chain, k = ctx.chain, ctx.k
        last = k == chain.n - 1
        # The sequence's output and the incoming gradient may be the caller's: only the
        # tensors this engine rebuilt (every node but the last) are overwritten in place.
        if last:
            (out,) = ctx.saved_tensors
        else:
            out, chain.rebuilt[k] = chain.rebuilt[k], None
        step = ctx.block.inverse_backward_pass if chain.inverse else ctx.block.backward_pass
        x, grad_x, pairs = step(out, grad, ctx.tape, in_place=not last)
        del out
        if k > 0 and ctx.needs_input_grad[0]:
            chain.rebuilt[k - 1] = x
        del x
        slot = {id(p): i for i, p in enumerate(ctx.params)}
        param_grads: list[torch.Tensor | None] = [None] * len(ctx.params)
        for p, g in pairs:  # a parameter can appear in both F and G
            i = slot[id(p)]
            param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
        return (grad_x, None, None, None, *param_grads)
