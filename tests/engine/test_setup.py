"""Assembling a run: the data folder is opened once, and the Trainer gets parts, not a preset."""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path

import torch

from revmed import config
from revmed.data import layout
from revmed.data.patchify import patchify
from revmed.engine.setup import setup_training
from revmed.engine.trainer import Trainer


def _count_openings(monkeypatch) -> Counter:
    """Counts, per folder, the readings of a dataset's ``dataset.toml`` (every
    ``load_dataset`` reads it once) and of a patch folder's ``manifest.json``."""
    opened: Counter = Counter()
    read_dataset_toml, read_text = layout._read_manifest, Path.read_text

    def dataset_toml(root):
        opened[Path(root).resolve()] += 1
        return read_dataset_toml(root)

    def text(self, *args, **kwargs):
        if self.name == "manifest.json":
            opened[self.parent.resolve()] += 1
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(layout, "_read_manifest", dataset_toml)
    monkeypatch.setattr(Path, "read_text", text)
    return opened


def test_a_run_opens_its_dataset_once(sr_data, tiny_sr, tmp_path, monkeypatch):
    """zscore-dataset statistics, the training patches, the card and the validation cases all
    come from one opening (before the setup read the folder up to four times)."""
    preset = config.load_preset("demo-sr", [*tiny_sr, "data.intensity='zscore-dataset'"])
    opened = _count_openings(monkeypatch)
    trainer = setup_training(preset, sr_data, tmp_path / "run", torch.device("cpu"))
    record = trainer.fit()
    assert opened == Counter({sr_data.resolve(): 1})
    assert "val_psnr" in record  # the validation cases were found, and scored
    assert trainer.validate.cases and trainer.record.preset.data.input_mean  # statistics set


def test_a_run_on_patches_reads_the_manifest_once(sr_data, tiny_sr, tmp_path, monkeypatch):
    """A patch folder: its manifest once, and the dataset it was cut from once (for its
    validation cases)."""
    preset = config.load_preset("demo-sr", tiny_sr)
    patchify(sr_data, tmp_path / "patches", preset)
    opened = _count_openings(monkeypatch)
    trainer = setup_training(preset, tmp_path / "patches", tmp_path / "run", torch.device("cpu"))
    record = trainer.fit()
    assert opened == Counter({(tmp_path / "patches").resolve(): 1, sr_data.resolve(): 1})
    assert "val_psnr" in record


def test_the_trainer_is_given_parts_not_a_preset_or_a_path():
    parameters = inspect.signature(Trainer).parameters
    annotations = " ".join(str(p.annotation) for p in parameters.values())
    assert "Preset" not in annotations and "Path" not in annotations
    assert not {"preset", "data_dir", "run_dir"} & set(parameters)
    assert {"step", "patches", "validate", "run"} <= set(parameters)
