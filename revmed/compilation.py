"""``--compile``: the networks' plain sub-networks compiled with ``torch.compile``.

What gets compiled is every *plain* part of a model: a maximal sub-module that holds no
invertible block. For a RevGAN these are the encoders, decoders and each coupling's ``F`` and
``G``; for an iUNet each coupling's ``F`` and ``G``; the PatchGAN critics whole. The invertible
blocks themselves and the memory-saving engine (``revmed.nn.ReversibleSequence``) stay eager:
the engine's backward pass is a custom ``torch.autograd.Function`` that re-runs sub-networks
with a graph of their own and calls ``torch.autograd.grad`` on them, which TorchDynamo cannot
trace into one graph. Compiling the sub-networks keeps that engine as it is (and its memory
promise) while every convolution stack it calls, in the forward pass and in the re-run, is a
compiled graph.

Each part's ``forward`` is replaced by its compiled version on the module itself, so the
module tree, parameter names and checkpoints are the same as without ``--compile``. (PyTorch's
``nn.Module.compile()`` is not used: on PyTorch 2.13 it leaves the module running eagerly.)

TorchInductor needs a C++ compiler on CPU and Triton on CUDA. ``check_compiler`` compiles one
tiny function first, so a machine without them gets one clear error instead of a failure deep
inside the first training step.
"""

from __future__ import annotations

import torch
from torch import nn

from revmed.errors import ConfigError
from revmed.nn import InvertibleModule, ReversibleSequence

_ENGINE_TYPES = (InvertibleModule, ReversibleSequence)

#: Compiled graphs Dynamo may keep per code object (its default is 8); see compile_plain_parts.
RECOMPILE_LIMIT = 64


def plain_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(name, module)]``: the maximal sub-modules of ``model`` holding no invertible block
    and at least one parameter, in module order (``model`` itself when it is plain)."""
    def holds_engine(module: nn.Module) -> bool:
        return any(isinstance(m, _ENGINE_TYPES) for m in module.modules())

    def walk(name: str, module: nn.Module):
        if not holds_engine(module):
            if any(True for _ in module.parameters()):
                yield name, module
            return
        for child_name, child in module.named_children():
            yield from walk(f"{name}.{child_name}" if name else child_name, child)

    return list(walk("", model))


def check_compiler(device: torch.device) -> None:
    """Raise ``ConfigError`` when ``torch.compile`` cannot build kernels on ``device``."""
    def probe(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2.0 + 1.0

    try:
        compiled = torch.compile(probe)
        compiled(torch.ones(8, device=device))
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--compile: torch.compile does not work on {device.type} here "
                          f"({type(exc).__name__}: {first[:200]}); run without --compile "
                          "(TorchInductor needs a C++ compiler on CPU, Triton on CUDA)") from None


def compile_plain_parts(model: nn.Module, mode: str | None = None) -> list[str]:
    """Replace the ``forward`` of each of ``model``'s plain parts (see ``plain_parts``) by its
    ``torch.compile``-d version, in place; returns their names. ``mode`` is torch.compile's
    (None: its default). Compilation itself happens at each part's first call."""
    # Dynamo keeps one cache of compiled graphs for all these parts (they share the code of
    # torch.compile's wrapper), with an entry per kind of part and per call situation: with
    # and without a graph (the engine's forward pass and its re-run), train and eval mode,
    # channel-half views at an offset or not. The default limit of 8 entries would send the
    # later parts back to eager mode.
    dynamo_config = torch._dynamo.config
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    names = []
    for name, part in plain_parts(model):
        if getattr(part, "revmed_compiled", False):
            continue
        part.forward = torch.compile(part.forward, mode=mode)
        part.revmed_compiled = True
        names.append(name)
    return names
