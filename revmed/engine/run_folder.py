"""The run folder of one training run, and the rules that keep it consistent.

A run folder holds ``preset.toml`` (the resolved preset), ``metrics.jsonl`` (one JSON line per
epoch), ``last.pt`` (after every epoch, and at an interruption) and ``best.pt`` (the best
validation score; the last epoch when there is no validation split).

A new run refuses a folder that already holds ``last.pt``; a resumed run needs it, and must be
the same run: the same model, data mapping, patch sampling and optimisation (``RESUMABLE_KEYS``
may change). Each epoch end appends the ``metrics.jsonl`` line, then writes ``best.pt``, then
``last.pt``, the commit point: a run killed before it redoes the epoch, and ``tidy`` drops the
early line and the temporary files a killed process left.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from revmed.atomic import atomic_path
from revmed.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from revmed.config import to_toml
from revmed.errors import ConfigError, InputError, OutputError
from revmed.preset import Preset

#: Preset keys a resumed run may change: how long it trains, and what does not shape training.
RESUMABLE_KEYS = ("name", "base", "description", "data_dir", "synth", "train.epochs",
                  "train.epochs_decay", "train.time_limit", "train.compile",
                  "train.channels_last", "infer.")
#: The files of a run.
FILES = ("last.pt", "best.pt", "preset.toml", "metrics.jsonl")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_run(saved: Preset, preset: Preset, last: Path) -> None:
    """Raise ``ConfigError`` when ``preset`` would train a different run than the one saved
    in ``last``: another model, data mapping, patch sampling or optimisation."""
    old, new = _flatten(saved.to_dict()), _flatten(preset.to_dict())
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUMABLE_KEYS) or old.get(key) == new.get(key):
            continue
        raise ConfigError(f"{last}: the run was trained with {key} = {old.get(key)!r}, not "
                          f"{new.get(key)!r}; resume with the same preset and --set values "
                          f"(see {last.parent / 'preset.toml'})")


class RunFolder:
    """The files of a run in ``path``; only the main process (``writes``) changes them."""

    def __init__(self, path: str | Path, writes: bool = True) -> None:
        self.path, self.writes = Path(path), writes
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"
        self.metrics = self.path / "metrics.jsonl"

    def check(self, preset: Preset, resume: bool) -> Checkpoint | None:
        """The saved state of the run to resume (None for a new run), checked: raises
        ``InputError`` / ``OutputError`` / ``ConfigError`` for a folder that holds no run to
        resume, holds a run already, or holds a different one. Writes nothing."""
        if resume and not self.last.is_file():
            raise InputError(f"{self.last}: nothing to resume (no last.pt in the run folder)")
        if not resume and self.last.exists():
            raise OutputError(f"{self.path}: holds a run already", fix="resume")
        if not resume:
            return None
        saved = load_checkpoint(self.last)
        check_same_run(saved.preset, preset, self.last)
        return saved

    def begin(self, preset: Preset) -> None:
        """Make the folder of a new run and write its ``preset.toml``."""
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path / "preset.toml") as tmp:
                tmp.write_text(to_toml(preset))

    def tidy(self, epoch: int) -> None:
        """Remove what a killed run may leave: temporary files of its checkpoints and logs,
        and ``metrics.jsonl`` lines (or a torn last line) beyond ``epoch``."""
        if not self.writes:
            return
        for name in FILES:
            for stale in self.path.glob(f".{name}.tmp-*"):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        if not self.metrics.is_file():
            return
        lines = self.metrics.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = [line for line in lines if line.endswith("\n") and _epoch_of(line) <= epoch]
        if keep != lines:
            with atomic_path(self.metrics) as tmp:
                tmp.write_text("".join(keep), encoding="utf-8")

    def end_epoch(self, record: dict[str, Any], checkpoint: Checkpoint, best: bool) -> None:
        """The metrics line, then ``best.pt`` when ``best``, then ``last.pt``."""
        with open(self.metrics, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        if best:
            save_checkpoint(self.best, checkpoint)
        save_checkpoint(self.last, checkpoint)

    def save_last(self, checkpoint: Checkpoint) -> None:
        """``last.pt`` alone (an interrupted epoch)."""
        save_checkpoint(self.last, checkpoint)


def _epoch_of(line: str) -> float:
    """The epoch of a ``metrics.jsonl`` line; infinity for a line that is not one."""
    try:
        entry = json.loads(line)
    except ValueError:
        return float("inf")
    return entry.get("epoch", 0) if isinstance(entry, dict) else float("inf")
