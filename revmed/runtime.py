"""Where and how networks run: the device, the autocast precision, the memory format of 3D
tensors, and ``torch.compile`` of the plain sub-networks.

Training (``revmed.engine.step``), validation and inference (``revmed.inference``) and the
planner take these four choices from here, so a preset's ``precision``, ``channels_last`` and
``compile`` keys mean the same thing everywhere.

**Device.** ``resolve_device("auto")`` picks CUDA when there is one.

**Precision** (``fp32``, ``bf16``, ``fp16``). Forward passes run under ``torch.autocast`` with
the chosen dtype; weights, optimiser state and checkpoints stay float32. fp16 training scales
the losses with ``torch.amp.GradScaler`` so small gradients do not flush to zero; bf16 has
float32's exponent range and needs no scaler. The memory-free backward rebuilds each coupling
block's input from its output; in low precision that rebuild is inexact (``x + f(y) - f(y)``
no longer cancels exactly), so the trainer logs the core's reconstruction error each epoch
(``core_recon_error`` in ``metrics.jsonl``; docs/benchmarks.md gives measured values).

**Channels-last.** A ``(B, C, D, H, W)`` tensor is normally stored with each channel's volume
contiguous (NCDHW); ``torch.channels_last_3d`` stores the C values of each voxel together
instead. Shape and values stay the same, only the strides change. oneDNN (CPU) and cuDNN
(tensor-core GPUs) have faster kernels for that layout, so converting the weights once and each
batch on its way in can save the conversions they would otherwise make inside every
convolution; docs/benchmarks.md gives measured step times. The memory-saving engine works
unchanged on channels-last tensors: channel halves are strided views either way, and the
in-place rebuild writes through them.

**Compile.** What gets compiled is every *plain* part of a model: a maximal sub-module that
holds no invertible block (RevGAN: encoders, decoders, each coupling's ``F`` and ``G``; iUNet:
the 1x1x1 convolutions and each coupling's ``F`` and ``G``; the critics whole). The invertible
blocks and the memory-saving engine (``revmed.nn.ReversibleSequence``) stay eager: the engine's
backward pass is a custom ``torch.autograd.Function`` that re-runs sub-networks with a graph of
their own and calls ``torch.autograd.grad`` on them, which TorchDynamo cannot trace into one
graph. Compiling the sub-networks keeps that engine (and its memory promise) while every
convolution stack it calls, in the forward pass and in the re-run, is a compiled graph. Each
part's ``forward`` is replaced by its compiled version on the module itself, so the module
tree, parameter names and checkpoints are unchanged. (``nn.Module.compile()`` is not used: on
PyTorch 2.13 it leaves the module running eagerly.) TorchInductor needs a C++ compiler on CPU
and Triton on CUDA; ``check_compiler`` compiles one tiny function first, so a machine without
them gets one clear error instead of a failure deep inside the first step.
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings

import torch
from torch import nn

from revmed.errors import ConfigError
from revmed.nn import InvertibleModule, ReversibleSequence

# --- device ------------------------------------------------------------------------------------


def device_choices() -> list[str]:
    """The device names ``resolve_device`` takes: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, and
    ``mps`` where this PyTorch build has it."""
    return ["auto", "cpu", "cuda", "cuda:N"] + (["mps"] if torch.backends.mps.is_built() else [])


def resolve_device(name: str) -> torch.device:
    """The device ``name`` names; ``auto`` picks CUDA when available. A name that is no
    device, or a device this machine lacks, is a ``ConfigError`` of one line that names the
    choices (``device_choices``)."""
    choices = f"choose one of {', '.join(device_choices())}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    cuda = re.fullmatch(r"cuda(?::(\d+))?", name)
    if cuda:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name}: no CUDA device is available here; {choices}",
                              option="device")
        if cuda.group(1) is not None and int(cuda.group(1)) >= count:
            raise ConfigError(f"device {name}: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}", option="device")
        return torch.device(name)
    if name == "mps" and torch.backends.mps.is_built():
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device mps: no MPS device is available here; {choices}",
                              option="device")
        return torch.device("mps")
    what = "this PyTorch build has no MPS support" if name == "mps" else "not a device"
    raise ConfigError(f"device {name}: {what}; {choices}", option="device")


# --- precision ---------------------------------------------------------------------------------

#: The precisions a preset's ``train.precision`` and ``infer.precision`` may name.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


@functools.cache
def onednn_supports(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs convolutions in ``dtype`` on this CPU: one small fused convolution
    (``torch.ops.mkldnn._convolution_pointwise``, as ``revmed.inference.fused`` runs them), its
    answer kept for the process. bf16 needs AVX-512 (or AVX-NE-CONVERT); without it PyTorch
    falls back to a reference convolution, 75x slower than fp32 on a 2-core AVX2 CPU
    (docs/inference.md, "Precision"); ``inference_precision`` runs fp32 there instead."""
    if not (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return False
    try:
        y = torch.ops.mkldnn._convolution_pointwise(
            torch.ones(1, 2, 3, 3, 3, dtype=dtype), torch.ones(2, 2, 1, 1, 1, dtype=dtype),
            torch.zeros(2, dtype=dtype), [0] * 3, [1] * 3, [1] * 3, 1, "relu", [], None)
    except (RuntimeError, NotImplementedError):
        return False
    return bool((y.float() == 2).all())


def inference_precision(precision: str, device: torch.device) -> str:
    """``precision``, or ``fp32`` with a warning where it would run on the CPU without oneDNN
    convolutions in its dtype (far slower than fp32, not faster)."""
    if precision == "fp32" or device.type != "cpu" or onednn_supports(DTYPES[precision]):
        return precision
    warnings.warn(f"precision {precision}: this CPU has no oneDNN {precision} convolutions "
                  "(they need AVX-512), so it would run far slower than fp32; running fp32",
                  stacklevel=2)
    return "fp32"


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (disabled, it passes losses through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


# --- memory format -----------------------------------------------------------------------------

#: The channels-last order of 5D tensors.
CHANNELS_LAST = torch.channels_last_3d


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 5D parameters and buffers (convolution weights) in channels-last
    order, in place; returns it.

    A tensor already contiguous in that order is left alone, even when its strides differ
    from what ``module.to(memory_format=...)`` would give it: for a weight such as
    ``(1, C, 1, 1, 1)`` both orders hold the same bytes, and restriding it would only make
    its strides differ from those of its gradient, which DistributedDataParallel warns about.
    """
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.dim() == 5 and not tensor.is_contiguous(memory_format=CHANNELS_LAST):
            tensor.data = tensor.data.contiguous(memory_format=CHANNELS_LAST)
    return module


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last order when it is ``(B, C, D, H, W)``; other tensors unchanged."""
    return x.contiguous(memory_format=CHANNELS_LAST) if x.dim() == 5 else x


# --- compile -----------------------------------------------------------------------------------

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
        raise ConfigError(f"compile: torch.compile does not work on {device.type} here "
                          f"({type(exc).__name__}: {first[:200]}); TorchInductor needs a C++ "
                          "compiler on CPU, Triton on CUDA", option="compile",
                          fix="compile") from None


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


def prepare(model: nn.Module, device: torch.device, channels_last: bool = False,
            compile: bool = False) -> nn.Module:  # noqa: A002 - the preset key's name
    """``model`` on ``device``, its weights in channels-last order and its plain parts
    compiled as asked; in place, returns it. Checks the compiler first."""
    model = model.to(device)
    if compile:
        check_compiler(device)
    if channels_last:
        to_channels_last(model)
    if compile:
        compile_plain_parts(model)
    return model
