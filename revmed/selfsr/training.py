"""Training a RevGAN on one scan's (or several scans') own training pairs.

The network, objective and optimiser are those of a preset (``selfsr`` by default: a small
residual RevGAN, paired L1 without the GAN term), run through ``revmed.engine.step.TrainingStep``;
the data keys that depend on the scan are set here: the intensity window (from the scan's
values, ``scan_window``), the refinement factors and the patch size on the scan's axes. The
result is a ``Checkpoint`` whose model card lets ``revmed infer`` run it on other scans of the
same protocol; it holds the network's normalisation statistics, measured after training on
patches of the same pairs, so inference runs in large tiles (``revmed.nn.norm_statistics``).

The budget is time by default: training runs until ``time_limit`` seconds have passed, so a
faster machine trains more. ``steps`` fixes the count instead (and the time limit applies only
when given too; the first reached ends training). The learning rate falls along a cosine from
the preset's rate to ``FINAL_LR_FRACTION`` of it over the budget, measured as the larger of the
fraction of the steps done and the fraction of the time used, so a run stopped by its time
limit ends at a low rate rather than in the middle of a schedule. With the same seed, scans and
``steps`` (no time limit) a run on the CPU repeats exactly: the weights are initialised from
``torch.manual_seed(seed)``, the patches drawn from a generator seeded with it, and the rate
follows the steps alone. A run limited by time depends on how fast the machine is at the time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from revmed import config
from revmed.checkpoint import Checkpoint, ModelCard
from revmed.engine.setup import build_training_step
from revmed.engine.step import CALIBRATION_PATCHES
from revmed.errors import ConfigError, InputError
from revmed.preset import Preset
from revmed.selfsr.pairs import training_pairs
from revmed.selfsr.plan import Refinement
from revmed.selfsr.sampling import PatchSampler
from revmed.transforms import normalise

#: The preset whose network and training settings selfsr uses unless told otherwise.
DEFAULT_PRESET = "selfsr"
#: Percentiles of a scan's values that bound its window, and the margin added on each side
#: (a fraction of their span): values beyond pass through the network unchanged.
WINDOW_PERCENTILES = (0.1, 99.9)
WINDOW_MARGIN = 0.02

#: The training budget when neither steps nor a time limit is given (seconds).
TIME_LIMIT = 240.0
#: The learning rate at the end of the budget, as a fraction of the preset's.
FINAL_LR_FRACTION = 0.02

#: ``progress(step, steps, loss, seconds_left)`` after each step; ``steps`` is the count asked
#: for, or under a time budget the count the time is expected to allow.
Progress = Callable[[int, int, float, float], None]


def training_budget(steps: int | None, time_limit: float | None) -> tuple[int | None, float]:
    """``(steps, time_limit)`` of a run asked for ``steps`` and ``time_limit`` (None: not
    given): time (``TIME_LIMIT``) unless steps are given; a time limit of 0 is none.
    ``ConfigError`` when that leaves no budget."""
    if steps is not None and steps < 1:
        raise ConfigError(f"steps {steps}: must be at least 1", option="steps")
    if time_limit is not None and time_limit < 0:
        raise ConfigError(f"time_limit {time_limit}: must be 0 or more", option="time_limit")
    limit = (TIME_LIMIT if steps is None else 0.0) if time_limit is None else float(time_limit)
    if steps is None and limit == 0:
        raise ConfigError("time_limit 0: without steps, training would have no budget; give "
                          "steps or a time limit above 0", option="time_limit")
    return steps, limit


def budget_used(done: int, steps: int | None, elapsed: float, time_limit: float) -> float:
    """The fraction of the budget used (1 or more: stop)."""
    used = [done / steps] if steps else []
    if time_limit > 0:
        used.append(elapsed / time_limit)
    return max(used)


def lr_scale(used: float) -> float:
    """The learning rate's factor when ``used`` of the budget is used: a cosine from 1 to
    ``FINAL_LR_FRACTION``."""
    used = min(max(used, 0.0), 1.0)
    return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * used))


@dataclass
class TrainedModel:
    """A trained selfsr network: its checkpoint, and how its training went."""

    checkpoint: Checkpoint
    steps: int
    seconds: float
    loss: float
    #: what ended training: ``"time"`` (the time limit) or ``"steps"`` (the count asked for)
    limited_by: str = "steps"


def scan_window(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """The intensity window of the scans' values: their 0.1th and 99.9th percentiles, widened
    by 2 % of the span each side. ``InputError`` for scans of one value."""
    values = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])
    lo, hi = (float(v) for v in np.percentile(values, WINDOW_PERCENTILES))
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        raise InputError(f"the scan holds one value ({lo:g}) only: nothing to refine")
    margin = WINDOW_MARGIN * (hi - lo)
    return lo - margin, hi + margin


def voxel_patch(size: Sequence[int], plan: Refinement) -> list[int]:
    """The preset's ``patch.size``, given in the pairs' frame (the scan's through-plane axis,
    the other in-plane axis, the refined axis; ``revmed.selfsr.pairs.frame``), on the scan's
    voxel axes. For a scan whose slices run along ``k`` the two are the same."""
    out = [0, 0, 0]
    out[plan.inplane[0]], out[plan.inplane[1]], out[plan.axis] = (int(s) for s in size)
    return out


def check_preset(ref: str, overrides: Sequence[str] = ()) -> Preset:
    """The preset ``ref`` (a name or .toml path) with ``overrides`` (``key=value``), checked
    for what selfsr needs: ``ConfigError`` for one it cannot train."""
    preset = config.load_preset(ref, overrides)
    if preset.model.kind != "revgan3d" or not getattr(preset.model, "residual", False):
        raise ConfigError(f"preset {ref}: selfsr trains a residual RevGAN (model.kind = "
                          "'revgan3d', model.residual = true)", option="preset")
    if preset.train.objective != "paired":
        raise ConfigError(f"preset {ref}: selfsr trains on pairs (train.objective = 'paired')",
                          option="preset")
    return preset


def selfsr_preset(ref: str, plan: Refinement, window: tuple[float, float], seed: int,
                  overrides: Sequence[str] = ()) -> Preset:
    """``check_preset(ref, overrides)`` with the keys a scan decides: task, one channel in and
    out, the window, the factors, the patch on the scan's axes (``voxel_patch``), the seed."""
    patch = voxel_patch(check_preset(ref, overrides).patch.size, plan)
    scan = [f"task={'sr'!r}", "data.in_channels=1", "data.out_channels=1",
            f"data.intensity={'window'!r}", f"data.window=[{window[0]!r}, {window[1]!r}]",
            f"data.sr_factors={list(plan.sr_factors)}", f"data.sr_upsample={'bspline'!r}",
            f"patch.size={patch}", f"train.seed={int(seed)}"]
    return config.load_preset(ref, [*overrides, *scan])


def _pairs(scans: Sequence[np.ndarray], plans: Sequence[Refinement],
           window: tuple[float, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The normalised training pairs of every scan (``(I, J, K)`` arrays each)."""
    pairs = []
    for scan, plan in zip(scans, plans, strict=True):
        for x, y in training_pairs(scan, plan):
            pairs.append((normalise(x[None], "window", window)[0],
                          normalise(y[None], "window", window)[0]))
    return pairs


def train_selfsr(scans: Sequence[np.ndarray], plans: Sequence[Refinement], preset: Preset,
                 device: torch.device, steps: int | None = None,
                 time_limit: float | None = None,
                 progress: Progress | None = None) -> TrainedModel:
    """Train ``preset``'s network (``selfsr_preset``) on the pairs of ``scans`` (``(I, J,
    K)`` arrays in their units, refined as ``plans`` say, every plan with the same axis and
    factor) within the budget of ``steps`` and ``time_limit`` (``training_budget``; the
    default is ``TIME_LIMIT`` seconds)."""
    steps, time_limit = training_budget(steps, time_limit)
    pairs = _pairs(scans, plans, preset.data.window)
    seed = preset.train.seed
    torch.manual_seed(seed)
    trainer = build_training_step(preset, device)
    trainer.model.train()
    # the pairs and the resolved patch size are both on the scan's voxel axes
    sampler = PatchSampler(pairs, preset.patch.size, seed)
    start, done, losses = time.monotonic(), 0, []
    used = 0.0
    while used < 1.0:
        trainer.scale_lr(lr_scale(used))
        batch = {k: v.to(device) for k, v in sampler.batch(preset.train.batch_size).items()}
        logs = trainer.step(batch)
        done += 1
        losses.append(float(logs.get("l1", logs.get("g_loss", 0.0))))
        elapsed = time.monotonic() - start
        used = budget_used(done, steps, elapsed, time_limit)
        if progress is not None:
            expected = max(done, round(done / used)) if used > 0 else done
            progress(done, expected, float(np.mean(losses[-20:])),
                     max(0.0, elapsed / used - elapsed) if used > 0 else 0.0)
    # the normalisation statistics of tiled inference, measured with the final weights on
    # patches of the same pairs, drawn by a generator of their own
    calibration = PatchSampler(pairs, preset.patch.size, seed + 1).batch(CALIBRATION_PATCHES)
    trainer.calibrate({k: v.numpy() for k, v in calibration.items()}, epoch=0)
    seconds = time.monotonic() - start
    trainer.model.eval()
    card = ModelCard.of(preset, channels=("image",))
    state = {"generator": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}}
    if trainer.norm_statistics is not None:
        state["norm_statistics"] = trainer.norm_statistics
    checkpoint = Checkpoint(card=card, preset=preset, state=state, epoch=1,
                            metrics={"selfsr_steps": done, "selfsr_loss": float(losses[-1])})
    return TrainedModel(checkpoint, done, seconds, float(np.mean(losses[-20:])),
                        limited_by="steps" if steps is not None and done >= steps else "time")

