"""The contract between invertible blocks and the memory-saving engine.

An :class:`InvertibleModule` has ``forward(x)`` and an exact ``inverse(y)``. For the engine it
also has two backward steps, one per direction: given a block's *output* (no graph attached)
and the gradient of the loss with respect to it, rebuild the block's *input*, the gradient
with respect to that input, and the gradients of the block's parameters.

The defaults below rebuild the input with the opposite direction and then differentiate by
re-running the block with a graph: two extra evaluations per block, which is right for cheap
linear blocks such as the orthogonal resampling. :class:`~revmed.nn.AdditiveCoupling`
overrides both steps with a fused version that evaluates each sub-network once.
"""

from __future__ import annotations

import torch
from torch import nn

from revmed.nn.replay import Tape, replaying

ParamGrads = list[tuple[nn.Parameter, torch.Tensor]]


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``module`` that require grad, each once, in registration order."""
    return [p for p in module.parameters() if p.requires_grad]


class InvertibleModule(nn.Module):
    """Base class of blocks that :class:`~revmed.nn.ReversibleSequence` can run.

    Subclasses implement ``forward(x) -> y`` and ``inverse(y) -> x``, with
    ``inverse(forward(x)) == x`` up to rounding, for every parameter value.
    """

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward_pass(self, y: torch.Tensor, grad_y: torch.Tensor, tape: Tape | None = None,
                      in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor, ParamGrads]:
        """Backward step of ``forward``: ``(y = self(x), dL/dy) -> (x, dL/dx, [(p, dL/dp)])``.

        ``y`` carries no graph; ``tape`` is what the engine recorded while computing it. With
        ``in_place`` the caller owns ``y`` and ``grad_y`` and the step may overwrite them.
        """
        return _rebuild_then_rerun(self, self.inverse, self.forward, y, grad_y, tape)

    def inverse_backward_pass(self, x: torch.Tensor, grad_x: torch.Tensor,
                              tape: Tape | None = None, in_place: bool = False
                              ) -> tuple[torch.Tensor, torch.Tensor, ParamGrads]:
        """Backward step of ``inverse``: ``(x = self.inverse(y), dL/dx) -> (y, dL/dy, [...])``."""
        return _rebuild_then_rerun(self, self.forward, self.inverse, x, grad_x, tape)


class Inverted(InvertibleModule):
    """The block ``block`` run backwards: ``forward`` is ``block.inverse`` and vice versa.

    Parameters are shared with ``block``. ``Inverted(OrthogonalResampling3d(c))`` is a learnable
    invertible upsampling.
    """

    def __init__(self, block: InvertibleModule) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.inverse(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.block(y)

    def backward_pass(self, y, grad_y, tape=None, in_place=False):
        return self.block.inverse_backward_pass(y, grad_y, tape, in_place)

    def inverse_backward_pass(self, x, grad_x, tape=None, in_place=False):
        return self.block.backward_pass(x, grad_x, tape, in_place)


def _rebuild_then_rerun(block, undo, run, out, grad_out, tape):
    """Generic backward step: ``inp = undo(out)``, then differentiate ``run`` at ``inp``."""
    with torch.no_grad(), replaying(tape, None):
        inp = undo(out)
    inp_grad, param_grads = vjp(run, inp, grad_out, trainable(block), tape, None)[1:]
    return inp, inp_grad, param_grads


def vjp(net, inp: torch.Tensor, grad_out: torch.Tensor, params: list[nn.Parameter],
        tape: Tape | None, index: int | None) -> tuple[torch.Tensor, torch.Tensor, ParamGrads]:
    """Evaluate ``out = net(inp)`` once with a graph and pull ``grad_out`` back through it.

    Returns ``out`` (detached), dL/d``inp`` and the parameter gradients. The evaluation replays
    the autocast state and, when ``index`` is given, RNG snapshot ``index`` from ``tape``. The
    graph is freed before returning, so at most one sub-network's activations are alive.
    """
    inp = inp.detach().requires_grad_()
    with torch.enable_grad(), replaying(tape, index):
        out = net(inp)
    if not out.requires_grad:  # net ignores its input and has nothing to train
        return out.detach(), torch.zeros_like(inp), []
    grads = torch.autograd.grad(out, [inp, *params], grad_out.to(out.dtype), allow_unused=True)
    inp_grad = grads[0] if grads[0] is not None else torch.zeros_like(inp)
    return out.detach(), inp_grad, [(p, g) for p, g in zip(params, grads[1:]) if g is not None]
