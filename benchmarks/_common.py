"""The model, the engines and the training step that benchmarks/memory.py and speed.py share,
and the memory and CPU-time readings the benchmarks' worker processes take.

The model has the shape of the RevGAN core used in the chest-CT abstract (Table 1): a lifting
convolution (1 -> width channels), ``depth`` additive couplings, a projection back to one
channel. Every engine wraps the *same* coupling modules with the same weights:

- ``revmed``: ``ReversibleSequence(memory_saving=True)``, the fused engine;
- ``naive``: the same with ``memory_saving=False`` (plain autograd);
- ``checkpoint``: ``torch.utils.checkpoint`` around each coupling (stores block inputs);
- ``memcnn``: ``memcnn.InvertibleModuleWrapper`` around each coupling, when memcnn imports.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from revmed.nn import AdditiveCoupling, ReversibleSequence, SavedTensorMeter

RESULTS = Path(__file__).resolve().parent / "results"


def available_modes() -> list[str]:
    modes = ["revmed", "naive", "checkpoint"]
    if importlib.util.find_spec("memcnn") is not None:
        modes.append("memcnn")
    return modes


def subnet(c: int) -> nn.Module:
    """F or G: Conv3d -> InstanceNorm3d -> ReLU -> Conv3d on c channels, (B, c, D, H, W)."""
    return nn.Sequential(nn.Conv3d(c, c, 3, padding=1), nn.InstanceNorm3d(c, affine=True),
                         nn.ReLU(), nn.Conv3d(c, c, 3, padding=1))


class _Checkpointed(nn.Module):
    """Blocks run one after another, each under torch.utils.checkpoint (non-reentrant)."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if torch.is_grad_enabled() else block(x)
        return x


def _memcnn_core(blocks: list[nn.Module]) -> nn.Module:
    with warnings.catch_warnings():  # memcnn imports deprecated torch.cuda.amp decorators
        warnings.simplefilter("ignore")
        import memcnn
    # ... and frees inputs through the deprecated TypedStorage API on every call.
    warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
    return nn.Sequential(*[memcnn.InvertibleModuleWrapper(b, keep_input=False,
                                                          keep_input_inverse=False)
                           for b in blocks])


def build_model(mode: str, depth: int, width: int, seed: int = 0) -> nn.Module:
    """(B, 1, P, P, P) -> (B, 1, P, P, P); identical weights for every mode given the seed."""
    torch.manual_seed(seed)
    lift = nn.Conv3d(1, width, 3, padding=1)
    blocks = [AdditiveCoupling(subnet(width // 2), subnet(width // 2)) for _ in range(depth)]
    project = nn.Conv3d(width, 1, 3, padding=1)
    if mode in ("revmed", "naive"):
        core = ReversibleSequence(blocks, memory_saving=mode == "revmed")
    elif mode == "checkpoint":
        core = _Checkpointed(blocks)
    elif mode == "memcnn":
        core = _memcnn_core(blocks)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return nn.Sequential(lift, core, project)


def make_batch(batch: int, patch: int, device: str, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, patch, patch, patch, generator=g) * 2 - 1
    target = torch.rand(batch, 1, patch, patch, patch, generator=g) * 2 - 1
    return x.to(device), target.to(device)


def train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """One training step without the optimizer update: forward, L1 loss, backward."""
    for p in model.parameters():
        p.grad = None
    loss = F.l1_loss(model(x), target)
    loss.backward()
    return loss.item()


def model_mib(model: nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


# --- a worker process's memory and CPU time (Linux: /proc/self) -------------------------------

def status_kib(field: str) -> int | None:
    """Field ``field`` of /proc/self/status in kiB ("VmRSS": resident now, "VmHWM": its
    high-water mark); None where the file or the field is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Set VmHWM to the current VmRSS; True if done, False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _required_kib(field: str) -> int:
    kib = status_kib(field)
    if kib is None:
        raise RuntimeError(f"{field} not in /proc/self/status")
    return kib


def _memory_baseline(device: str) -> int:
    """Reset ``device``'s peak-memory counter; return bytes allocated (CUDA) or VmRSS kiB (CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    base = _required_kib("VmRSS")
    if not reset_peak_rss():
        raise RuntimeError("cannot reset VmHWM through /proc/self/clear_refs")
    return base


def _peak_above_mib(device: str, base: int) -> float:
    """The peak since ``_memory_baseline(device)`` returned ``base``, above ``base``, in MiB."""
    if device == "cuda":
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return (_required_kib("VmHWM") - base) / 1024


def step_memory_mib(model: nn.Module, loss_fn, x: torch.Tensor, target: torch.Tensor,
                    device: str) -> tuple[float, float]:
    """Run one training step (forward, ``loss_fn(model(x), target)``, backward) and return, in
    MiB, its peak memory above what the process already held (torch.cuda.max_memory_allocated
    on CUDA, the resident high-water mark VmHWM on CPU) and the bytes autograd saved for
    backward during the forward pass, parameters excluded."""
    gc.collect()
    base = _memory_baseline(device)
    with SavedTensorMeter(exclude=model.parameters()) as meter:
        loss = loss_fn(model(x), target)
    loss.backward()
    return _peak_above_mib(device, base), meter.bytes / 2**20


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(device: str) -> dict:
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": device,
            "date": time.strftime("%Y-%m-%d %H:%M")}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    if importlib.util.find_spec("memcnn") is not None:
        from importlib.metadata import version
        info["memcnn"] = version("memcnn")
    return info


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- benchmarks that run each configuration in a fresh process --------------------------------

def run_json_worker(script: Path, spec: dict, spec_path: Path, env: dict[str, str]) -> dict:
    """Run ``script --worker SPEC OUT`` in a fresh process with ``spec`` (JSON) and return
    what it wrote to OUT, or ``{"error": last stderr line, "stderr_tail": [...]}``."""
    spec_path.write_text(json.dumps(spec))
    out_path = spec_path.with_suffix(".out.json")
    cmd = [sys.executable, str(script), "--worker", str(spec_path), str(out_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0 or not out_path.is_file():
        lines = (done.stderr.strip() or "(no output)").splitlines()
        return {"error": lines[-1], "stderr_tail": lines[-15:]}
    return json.loads(out_path.read_text())


def answer_worker(paths: Sequence[Path], work: Callable[[dict], dict]) -> None:
    """The worker side of ``run_json_worker``: ``work(spec)`` written whole to the OUT path."""
    spec_path, out_path = paths
    result = work(json.loads(Path(spec_path).read_text()))
    tmp = Path(out_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out_path)


def train_counted(preset, data: str, run_dir: Path) -> tuple[Any, int, float]:
    """Set up and run the training of ``preset`` on ``data`` into ``run_dir`` on the CPU:
    ``(trainer, generator parameter count, training CPU seconds)``."""
    import torch

    from revmed.engine.setup import setup_training

    trainer = setup_training(preset, data, run_dir, torch.device("cpu"))
    params = sum(p.numel() for p in trainer.model.parameters())
    gc.collect()
    start = cpu_seconds()
    trainer.fit()
    return trainer, params, cpu_seconds() - start


def write_low_resolution(cases, factors: Sequence[int], folder: Path) -> None:
    """Each case's high-resolution target as block means over ``factors`` (what the
    benchmarks super-resolve), as ``folder/<case>.nii.gz`` on the coarser grid."""
    from revmed.io import read_volume, write_volume, zoom_affine
    from revmed.transforms import downsample

    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        high = read_volume(case.target)
        low = high.with_array(downsample(high.array, factors),
                              zoom_affine(high.affine, [1.0 / f for f in factors]))
        write_volume(low, folder / f"{case.name}.nii.gz")
