"""Self-supervised super-resolution of thick-slice scans (``revmed selfsr``): a residual
RevGAN learns from a scan's own sharp in-plane axes how thick slices blur, and refines its
through-plane axis; no training data besides the scan (docs/selfsr.md)."""

from __future__ import annotations

from revmed.selfsr.plan import AXES, PROFILES, Refinement, plan_refinement
from revmed.selfsr.refine import (SelfSRResult, model_path_for, plan_for, refine, selfsr,
                                  train_for, translator_for)
from revmed.selfsr.training import TrainedModel, check_preset

__all__ = ["AXES", "PROFILES", "Refinement", "SelfSRResult", "TrainedModel", "check_preset",
           "model_path_for", "plan_for", "plan_refinement", "refine", "selfsr", "train_for",
           "translator_for"]
