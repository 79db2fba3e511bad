"""Assembling a training run, once: the data, the network's card, the step, the validator and
the run folder, handed to the ``Trainer``, which only runs the loop.

``setup_training(preset, data_dir, run_dir, device)`` is the one place a run reads its preset
and its data folder:

1. the data folder is opened once (``open_training_data``: its kind, channels, label set, the
   train source and the validation cases) and checked against the objective;
2. ``zscore-dataset`` statistics the preset leaves empty are measured on the train cases (or
   read from a patch folder) and become preset values, saved with the run;
3. the run folder is checked (resumable, free, writable) before any volume is read;
4. the training patches, the model card, the step (networks, objective, optimisers) and the
   validator are built from the sections they need;
5. a new run's folder is begun (``preset.toml``), or a resumed run's state restored.

A start that fails leaves no folder it made behind (``RunFolder.abandon``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revmed.checkpoint import ModelCard
from revmed.data.statistics import with_dataset_statistics, with_saved_statistics
from revmed.data.training_data import TrainingData, open_training_data
from revmed.data.training_patches import TrainingPatches
from revmed.engine.distributed import Distributed
from revmed.engine.run_folder import RunFolder, RunRecord, data_source
from revmed.engine.step import TrainingStep
from revmed.engine.trainer import Trainer
from revmed.engine.validation import Validator
from revmed.errors import ConfigError, InputError, OutputError, RevmedError
from revmed.inference.tiles import runs_in_tiles
from revmed.models import build_critics, get_family, model_spec
from revmed.preset import DataSection, Preset
from revmed.regions import LabelSet

#: Dataset kinds each objective can train on.
OBJECTIVE_DATA = {"paired": ("paired", "hr-only"), "unpaired": ("unpaired", "paired", "hr-only"),
                  "segmentation": ("segmentation",)}


def setup_training(preset: Preset, data_dir: str | Path, run_dir: str | Path,
                   device: torch.device, resume: bool = False, job: Distributed | None = None,
                   overwrite: bool = False) -> Trainer:
    """The ``Trainer`` of the run ``preset`` describes, on the data at ``data_dir``, writing
    ``run_dir`` (made if missing); see the module doc.

    Args:
        preset: a resolved preset (``revmed.config.load_preset``).
        data_dir: a dataset folder or a ``revmed patchify`` folder.
        run_dir: the run folder.
        device: a torch device (with ``job``, its type: each process takes its own GPU).
        resume: continue from ``run_dir/last.pt``.
        job: this process's place in a ``torchrun`` job (``Distributed.from_env()``), or None
            for a single process; see ``revmed.engine.distributed``.
        overwrite: start a new run in a folder that holds files already.
    """
    device = _join(job, device, preset.train.batch_size)
    training = open_training_data(data_dir, preset.synth)
    _check_kind(training, preset.train.objective, preset.name)
    labels = _check_regions(training, preset.data.out_channels, preset.name)
    preset = dataclasses.replace(preset, data=_statistics(preset.data, training))
    card = ModelCard.of(preset, training.channels, training.labels)
    record = RunRecord(card, preset, data_source(data_dir))
    run = RunFolder(run_dir, writes=job is None or job.is_main)
    try:
        saved = _on_every_process(job, lambda: run.check(record, resume, overwrite))
        torch.manual_seed(preset.train.seed)
        np.random.seed(preset.train.seed % 2**32)
        patches = TrainingPatches(training, preset.patch, preset.data, preset.train.seed)
        step = build_training_step(preset, device, job, labels)
        validator = Validator(training.validation_cases, training.validation_kind,
                              preset.data, preset.train, card, device)
        if saved is None:
            run.begin(record, overwrite)
        return Trainer(step, patches, validator, run, record, preset.train, device, job, saved)
    except BaseException:
        run.abandon()
        raise


def build_training_step(preset: Preset, device: torch.device, job: Distributed | None = None,
                        labels: LabelSet | None = None) -> TrainingStep:
    """The ``TrainingStep`` of ``preset``: its network (checked for training on ``device``),
    its critics when the objective has a GAN term, on ``device``; ``labels``: the label set of
    the data, which segmentation needs. What ``Trainer`` runs and the planner measures."""
    kind, kwargs = model_spec(preset)
    family = get_family(kind)
    model = family.network(**kwargs).to(device)
    data, train, patch = preset.data, preset.train, preset.patch.size
    try:
        family.check_training(model, data, train, patch, device)
        critics = (build_critics(preset.model, data, train.objective, patch)
                   if train.uses_critics else {})
    except ConfigError as exc:
        raise ConfigError(f"preset {preset.name}: {exc}", option=exc.option,
                          fix=exc.fix) from None
    tiles = family.tiles and runs_in_tiles(preset.patch.size)
    return TrainingStep(model, critics, preset.train, device, job, labels=labels, tiles=tiles)


def _check_kind(training: TrainingData, objective: str, preset_name: str) -> None:
    """``InputError`` when the data is of a kind the preset's objective cannot train on."""
    if training.kind not in OBJECTIVE_DATA[objective]:
        raise InputError(f"{training.folder}: holds a {training.kind} dataset, which cannot "
                         f"train the {objective} objective of preset {preset_name} (it trains "
                         f"on {' or '.join(OBJECTIVE_DATA[objective])} datasets)")


def _statistics(data: DataSection, training: TrainingData) -> DataSection:
    """``data`` with the ``zscore-dataset`` statistics it leaves empty."""
    if training.manifest is not None:
        return with_saved_statistics(data, training.manifest, training.folder)
    return with_dataset_statistics(data, training.train_cases, training.kind)


def _check_regions(training: TrainingData, out_channels: int,
                   preset_name: str) -> LabelSet | None:
    """The label set segmentation trains on, the data's (None for other kinds of data);
    ``ConfigError`` when the network's ``out_channels`` do not match the data's regions."""
    labels = training.labels
    if labels is None:
        return None
    if len(labels.names) != out_channels:
        where = training.dataset_root or "the data"
        raise ConfigError(f"preset {preset_name}: key 'data.out_channels' is {out_channels}, "
                          f"but {where} declares {len(labels.names)} region(s) "
                          f"({', '.join(labels.names)}); set "
                          f"data.out_channels = {len(labels.names)}")
    return labels


def _on_every_process(job: Distributed | None, check: Callable[[], Any]) -> Any:
    """``check()``, on every process of ``job``: if it fails on one, it fails on all (those
    whose own check passed say so), before any process writes."""
    if job is None:
        return check()
    try:
        result, failed = check(), None
    except RevmedError as exc:
        result, failed = None, exc
    if job.any(failed is not None)[0]:
        raise failed or OutputError("another process of this job refused the run folder")
    return result


def _join(job: Distributed | None, device: torch.device, batch_size: int) -> torch.device:
    """This process's device, in the process group of ``job`` (a single process: ``device``)."""
    if job is None:
        return device
    device = job.device_for(device)
    if batch_size % job.world_size:
        raise ConfigError(f"train.batch_size {batch_size} must be a multiple of the "
                          f"{job.world_size} processes: each takes an equal slice of every batch")
    job.join(device)
    return device
