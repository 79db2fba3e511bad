"""Self-supervised super-resolution of thick-slice scans, top to bottom: plan, train, refine.

``selfsr(volume)`` finds what to refine (``revmed.selfsr.plan``), trains a residual RevGAN on
the scan's own training pairs (``revmed.selfsr.training``) and applies it through-plane with
``revmed.inference.Translator``: the scan is put on the network's grid by cubic B-spline, run
in large tiles with the normalisation statistics measured after training (in blended windows
for a model saved before they were), values outside the training window pass through unchanged
(``keep_outside_window``), and the geometry keeps the scan's extent and direction with the
refined spacing. A fractional factor is finished by resampling the network's grid onto the
output grid along the through-plane axis (cubic B-spline).

``train_shared`` trains one network on the pairs of several scans of one protocol (same
through-plane axis and factor), and ``refine`` applies a trained network to any scan.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from revmed.errors import InputError
from revmed.inference import Translator
from revmed.io import Volume, check_finite
from revmed.selfsr.pairs import resample_axis
from revmed.sizes import require_memory, shape_text, voxel_bytes
from revmed.selfsr.plan import AXES, Refinement, plan_refinement
from revmed.selfsr.training import (DEFAULT_PRESET, Progress, TrainedModel, scan_window,
                                    selfsr_preset, train_selfsr)

#: Orientations the network's output is averaged over (``refine``).
ORIENTATIONS = 2

#: ``progress(done, total)`` of inference tiles or windows.
WindowProgress = Callable[[int, int], None]


@dataclass
class SelfSRResult:
    """What ``selfsr`` made: the refined volume, the plan it followed and the trained model."""

    volume: Volume
    plan: Refinement
    model: TrainedModel


def translator_for(model: TrainedModel, device: str | torch.device = "cpu",
                   source: str = "selfsr model") -> Translator:
    """The ``Translator`` that runs a trained selfsr network on ``device``."""
    return Translator.from_checkpoint(model.checkpoint, source, device)


def refine(model: TrainedModel | Translator, volume: Volume, plan: Refinement,
           device: str | torch.device = "cpu", progress: WindowProgress | None = None,
           orientations: int = ORIENTATIONS, tiling: str = "auto") -> Volume:
    """``volume`` refined by a trained selfsr network (or its ``Translator``), on ``plan``'s
    output grid, in the volume's units (see the module doc). ``orientations=2`` averages the
    network's output over the scan and the scan with its in-plane axes swapped (the other
    planes through the slices); 1 is what ``revmed infer`` does with a kept model.
    ``tiling``: ``Translator.translate``'s (``windows`` forces blended windows)."""
    translator = model if isinstance(model, Translator) else translator_for(model, device)
    card = translator.card
    if tuple(card.data.sr_factors) != plan.sr_factors:
        raise InputError(f"{volume.source or 'volume'}: the model refines "
                         f"{_factors_text(card.data.sr_factors)}, this scan needs "
                         f"{_factors_text(plan.sr_factors)}")
    def part(first: bool) -> WindowProgress | None:  # two passes, one bar
        if progress is None or orientations != 2:
            return progress
        return lambda done, total: progress(done + (0 if first else total), 2 * total)

    out = translator.translate(volume, progress=part(True), tiling=tiling)
    if orientations == 2:
        order = [0, 1, 2, 3]
        order[plan.inplane[0] + 1], order[plan.inplane[1] + 1] = (plan.inplane[1] + 1,
                                                                  plan.inplane[0] + 1)
        swapped = volume.with_array(np.ascontiguousarray(volume.array.transpose(order)))
        other = translator.translate(swapped, progress=part(False),
                                     tiling=tiling).array.transpose(order)
        out = out.with_array((out.array + other) / 2.0, out.affine)
    if not plan.resampled:
        return out
    array = resample_axis(out.array[0], plan.axis, plan.out_shape[plan.axis])
    return out.with_array(array[None], plan.out_affine(volume.affine))


def _factors_text(factors: Sequence[int]) -> str:
    axis = int(np.argmax(factors))
    return f"{factors[axis]}x along {AXES[axis]}"


def _plan(volume: Volume, options: dict) -> Refinement:
    check_finite(volume)
    return plan_refinement(volume, options.get("factor", "auto"), options.get("axis", "auto"),
                           options.get("thickness"), options.get("profile", "box"))


def train_for(volumes: Sequence[Volume], plans: Sequence[Refinement], *,
              preset: str = DEFAULT_PRESET, overrides: Sequence[str] = (), seed: int = 0,
              steps: int | None = None, time_limit: float | None = None,
              device: str | torch.device = "cpu",
              progress: Progress | None = None) -> TrainedModel:
    """A network trained on the pairs of ``volumes`` (refined as ``plans`` say; several scans
    must share the through-plane axis and factor)."""
    first = plans[0]
    for volume, plan in zip(volumes, plans, strict=True):
        if plan.sr_factors != first.sr_factors:
            raise InputError(f"{volume.source or 'volume'}: needs "
                             f"{_factors_text(plan.sr_factors)}, the first scan "
                             f"{_factors_text(first.sr_factors)}; a shared model refines "
                             "scans of one protocol (train one model per scan instead)")
    for volume, plan in zip(volumes, plans, strict=True):
        # the scan on the network's grid and two pairs of it (input and target each)
        require_memory(volume.source or "volume", voxel_bytes(plan.out_shape, 6),
                       f"training pairs on its {shape_text(plan.out_shape)} refined grid")
    arrays = [v.array[0] for v in volumes]
    configured = selfsr_preset(preset, first, scan_window(arrays), seed, overrides)
    return train_selfsr(arrays, plans, configured, torch.device(device), steps, time_limit,
                        progress)


def selfsr(volume: Volume, *, factor: str | float = "auto", axis: str | int = "auto",
           thickness: float | None = None, profile: str = "box",
           preset: str = DEFAULT_PRESET, overrides: Sequence[str] = (), seed: int = 0,
           steps: int | None = None, time_limit: float | None = None,
           device: str | torch.device = "cpu", progress: Progress | None = None,
           window_progress: WindowProgress | None = None,
           orientations: int = ORIENTATIONS) -> SelfSRResult:
    """Super-resolve one thick-slice ``volume`` from its own in-plane detail.

    ``factor``, ``axis``, ``thickness``, ``profile``: see ``plan_refinement``. ``preset``
    (name or .toml path) and ``overrides`` (``key=value``): the network and training
    settings. Training runs for ``time_limit`` seconds (240 by default) or, given
    ``steps``, that many steps (see ``revmed.selfsr.training.training_budget``);
    ``progress(step, steps, loss, seconds_left)`` follows it, ``window_progress(done, total)``
    the inference tiles; ``orientations``: see ``refine``. Returns the refined volume, the
    plan and the trained model.
    """
    plan = _plan(volume, {"factor": factor, "axis": axis, "thickness": thickness,
                          "profile": profile})
    model = train_for([volume], [plan], preset=preset, overrides=overrides, seed=seed,
                      steps=steps, time_limit=time_limit, device=device, progress=progress)
    return SelfSRResult(refine(model, volume, plan, device, window_progress, orientations), plan,
                        model)


def plan_for(volume: Volume, factor: str | float = "auto", axis: str | int = "auto",
             thickness: float | None = None, profile: str = "box") -> Refinement:
    """``plan_refinement`` after checking that the voxels are finite."""
    return _plan(volume, {"factor": factor, "axis": axis, "thickness": thickness,
                          "profile": profile})


def model_path_for(output: str | os.PathLike) -> str:
    """Where ``--keep-model`` puts the model of ``output``: beside it, ``NAME.selfsr.pt``."""
    from revmed.io import case_name

    path = os.fspath(output)
    return os.path.join(os.path.dirname(path), f"{case_name(path)}.selfsr.pt")
