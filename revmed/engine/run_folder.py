"""The run folder of one training run, and the rules that keep it consistent.

A run folder holds ``preset.toml`` (the resolved preset), ``metrics.jsonl`` (one JSON line per
epoch), ``last.pt`` (after every epoch, and at an interruption), ``best.pt`` (the best
validation score; the last epoch when there is no validation split), ``train.log`` (one plain,
timestamped line per start, epoch, interruption and divergence: what a scheduler's log would
show, kept with the run) and ``curves.svg`` (the quantities of ``metrics.jsonl`` by epoch,
``revmed.engine.curves``).

A new run needs an empty (or new) folder: one that holds a run already is refused (resume it),
and so is one that holds anything else (visible files), unless ``overwrite`` (the run files
there are then removed first). ``--out`` must be a folder that can be written, checked before
any data is loaded. A resumed run needs ``last.pt``, and must be the same run: the same model,
data mapping, patch sampling and optimisation (``RESUMABLE_KEYS`` may change), on the same data
(``data_source``: the same folder, or a copy of it elsewhere).

One process at a time works in a run folder: ``check`` takes its lock (``FolderLock``), which
the kernel drops when the process ends, however it ends. Each epoch end appends the
``metrics.jsonl`` line, then writes ``best.pt``, then ``last.pt``, the commit point: a run
killed before it redoes the epoch, and ``tidy`` (under the lock, so no live process is writing)
drops the early line and the temporary files a killed process left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revmed.checkpoint import (Checkpoint, ModelCard, load_checkpoint, read_payload,
                               save_checkpoint)
from revmed.config import to_toml
from revmed.engine.curves import SKIPPED, curves_svg
from revmed.io.folder_lock import FolderLock
from revmed.errors import ConfigError, InputError, OutputError
from revmed.io.atomic import atomic_path, check_output_folder
from revmed.preset import Preset

#: Preset keys a resumed run may change: how long it trains, and what does not shape training.
RESUMABLE_KEYS = ("name", "base", "description", "data_dir", "synth", "train.epochs",
                  "train.epochs_decay", "train.time_limit", "train.compile",
                  "train.channels_last", "infer.")
#: The files of a run.
FILES = ("last.pt", "best.pt", "preset.toml", "metrics.jsonl", "train.log", "curves.svg")
#: What a run stopped before its first save leaves (a folder holding only these is reused).
STARTED = {"preset.toml", "train.log"}
#: Bytes of each of the three samples (start, middle, end) a data fingerprint reads per file.
SAMPLE_BYTES = 4096


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
    keys = [key for key in sorted(set(old) | set(new))
            if not key.startswith(RESUMABLE_KEYS) and old.get(key) != new.get(key)]
    if not keys:
        return
    was = ", ".join(f"{key} = {_toml(old.get(key))}" for key in keys)
    now = ", ".join(_toml(new.get(key)) for key in keys)
    sets = " ".join(f"--set {key}={_toml(old[key])}" for key in keys if key in old)
    raise ConfigError(f"{last}: the run was trained with {was}, not {now}; resume with the "
                      f"same preset and --set values (here: {sets}; see "
                      f"{last.parent / 'preset.toml'})")


def _toml(value: Any) -> str:
    """``value`` as a TOML value for ``--set`` (strings quoted, booleans in lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value + "'" if "'" not in value else '"' + value + '"'
    return "(none)" if value is None else str(value)


def _sampled_digest(path: Path, size: int) -> str:
    """SHA-256 of three ``SAMPLE_BYTES`` samples of a file: its start, middle and end."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for offset in (0, max(size // 2 - SAMPLE_BYTES // 2, 0), max(size - SAMPLE_BYTES, 0)):
            handle.seek(offset)
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def data_source(data_dir: str | Path) -> dict[str, str]:
    """What a resumed run must train on again: ``{"path", "fingerprint"}``.

    ``path`` is the resolved folder. ``fingerprint`` is a quick digest of what training reads:
    the name, size and three 4 KiB samples of every file of a dataset's ``train`` split (and
    its ``dataset.toml``), or of a patch folder's shards, so that a copy of the same data
    elsewhere (a job's scratch disk) matches and another dataset does not.
    """
    root = Path(data_dir).resolve()
    digest = hashlib.sha256()
    patches = (root / "manifest.json").is_file()
    tops = [root / "shards"] if patches else [root / "dataset.toml", root / "train"]
    for top in tops:
        files = [top] if top.is_file() else sorted(
            Path(folder) / name for folder, _, names in os.walk(top) for name in names
            if not name.startswith("."))
        for path in files:
            try:
                size = path.stat().st_size
                sample = _sampled_digest(path, size)
            except OSError:
                continue  # unreadable here: the data checks name it when training reads it
            digest.update(f"{path.relative_to(root)}\0{size}\0{sample}\n".encode())
    return {"path": str(root), "fingerprint": digest.hexdigest()}


def recorded_data(run_dir: str | Path) -> Path | None:
    """The data folder the run in ``run_dir`` trained on, as its ``last.pt`` records it, when
    that folder is still there (what ``--resume`` without ``--data`` trains on); None
    otherwise."""
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        return None
    recorded = read_payload(last).get("data_source") or {}
    path = recorded.get("path") if isinstance(recorded, dict) else None
    return Path(path) if isinstance(path, str) and Path(path).is_dir() else None


def check_same_data(saved: dict[str, str], now: dict[str, str], last: Path) -> None:
    """Raise ``ConfigError`` when ``now`` (``data_source``) is other data than the run in
    ``last`` trained on: another folder whose training files differ. Checkpoints from before
    data sources were recorded pass."""
    if not saved or not now or saved.get("path") == now.get("path"):
        return
    if saved.get("fingerprint") != now.get("fingerprint"):
        raise ConfigError(f"{last}: the run was trained on {saved.get('path')}, not "
                          f"{now.get('path')} (its training files differ); resume with the "
                          "same --data")


@dataclass(frozen=True)
class RunRecord:
    """What every checkpoint of a run records beside its training state: the network's card,
    the resolved preset (``preset.toml``) and the data the run trains on (``data_source``)."""

    card: ModelCard
    preset: Preset
    data_source: dict[str, str]

    def checkpoint(self, state: dict[str, Any], epoch: int, step_in_epoch: int,
                   metrics: dict[str, Any]) -> Checkpoint:
        """The checkpoint of the run at ``epoch`` (completed) and ``step_in_epoch``."""
        return Checkpoint(self.card, self.preset, state, epoch, step_in_epoch, metrics,
                          self.data_source)


class RunFolder:
    """The files of a run in ``path``; only the main process (``writes``) changes them."""

    def __init__(self, path: str | Path, writes: bool = True) -> None:
        self.path, self.writes = Path(path), writes
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"
        self.metrics = self.path / "metrics.jsonl"
        self.lock = FolderLock(self.path, "revmed train")
        #: ``(epoch, step_in_epoch)`` of the last ``last.pt`` this object wrote, or None.
        self.last_written: tuple[int, int] | None = None
        #: Whether ``begin`` made the folder (``abandon`` removes it again while empty).
        self.made = False

    def contents(self) -> list[str]:
        """The visible entries of the folder that hold something (hidden ones are the lock,
        temporary files and system files), sorted; empty for a folder that does not exist.
        What a run stopped before its first save leaves, ``preset.toml`` and a
        ``metrics.jsonl`` without a whole line, holds nothing and is not listed."""
        if not self.path.is_dir():
            return []
        found = sorted(p.name for p in self.path.iterdir() if not p.name.startswith("."))
        if "metrics.jsonl" in found and not self._has_lines():
            found.remove("metrics.jsonl")
        return [] if set(found) <= STARTED else found

    def _has_lines(self) -> bool:
        try:
            text = self.metrics.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return True
        return any(_epoch_of(line) != float("inf") for line in text.splitlines(keepends=True)
                   if line.endswith("\n"))

    def check(self, record: RunRecord, resume: bool, overwrite: bool = False) -> Checkpoint | None:
        """The saved state of the run to resume (None for a new run), checked: raises
        ``InputError`` / ``OutputError`` / ``ConfigError`` for a folder that cannot be written,
        is in use, holds no run to resume, holds a run or other files already (unless
        ``overwrite``), or holds a different run than ``record`` (another preset) or one
        trained on other data (``record.data_source``). Takes the folder's lock when it exists;
        writes nothing else."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path}: is a file, not a run folder", option="out")
        check_output_folder(self.path)
        if self.writes and self.path.is_dir():
            self.lock.acquire()
        if resume:
            if not self.last.is_file():
                raise InputError(f"{self.last}: nothing to resume (no last.pt in the run folder)")
            saved = load_checkpoint(self.last)
            check_same_run(saved.preset, record.preset, self.last)
            check_same_data(saved.data_source, record.data_source, self.last)
            return saved
        found = self.contents()
        if found and not overwrite:
            if self.last.exists():
                raise OutputError(f"{self.path}: holds a run already", fix="resume")
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise OutputError(f"{self.path}: not empty ({shown}) and not a run to resume",
                              fix="overwrite_run")
        return None

    def begin(self, record: RunRecord, overwrite: bool = False) -> None:
        """Make the folder of a new run (and take its lock) and write its ``preset.toml``
        (``record.preset``); with ``overwrite``, the files of an earlier run there are removed
        first."""
        preset = record.preset
        if not self.writes:
            return
        self.made = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        if overwrite:
            for name in FILES:
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
        with atomic_path(self.path / "preset.toml") as tmp:
            tmp.write_text(to_toml(preset))
        self.log(f"started {preset.name}: {preset.train.total_epochs} epoch(s)")

    def release(self) -> None:
        """Let the folder's lock go (the process's end does it too)."""
        self.lock.release()

    def abandon(self) -> None:
        """After a start that failed: let the lock go, and remove the folder when ``begin``
        made it and nothing but a log of the attempt is in it (no partial run is left)."""
        self.release()
        if not (self.made and self.writes and self.path.is_dir()):
            return
        left = [p for p in self.path.iterdir() if p.name not in ("train.log", "preset.toml")]
        if not left:
            for name in ("train.log", "preset.toml"):
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
            with contextlib.suppress(OSError):
                self.path.rmdir()

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
        """The metrics line, then ``last.pt``, then ``best.pt`` when ``best``. When
        ``last.pt`` cannot be written (a full disk) the metrics line is taken back, so the
        folder holds what it held before the epoch: a run that resumes, or, before the first
        save, one that starts again without ``--overwrite``."""
        size = self.metrics.stat().st_size if self.metrics.is_file() else None
        try:
            with open(self.metrics, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
        except OSError as exc:  # a full disk: a torn line is dropped again by the next tidy
            self._take_back(size)
            raise OutputError(f"{self.metrics}: cannot write ({exc.strerror or exc})") from None
        try:
            save_checkpoint(self.last, checkpoint)
        except BaseException:
            self._take_back(size)
            raise
        self.last_written = (checkpoint.epoch, checkpoint.step_in_epoch)
        if best:
            save_checkpoint(self.best, checkpoint)
        self.log(epoch_line(record, checkpoint.preset.train.total_epochs, best))
        self._draw(checkpoint.preset.name)

    def _take_back(self, size: int | None) -> None:
        """``metrics.jsonl`` back to ``size`` bytes (removed when it did not exist)."""
        with contextlib.suppress(OSError):
            if size is None:
                self.metrics.unlink()
            else:
                os.truncate(self.metrics, size)

    def save_last(self, checkpoint: Checkpoint) -> None:
        """``last.pt`` alone (an interrupted epoch)."""
        save_checkpoint(self.last, checkpoint)
        self.last_written = (checkpoint.epoch, checkpoint.step_in_epoch)
        self.log(f"interrupted in epoch {checkpoint.epoch + 1} after step "
                 f"{checkpoint.step_in_epoch}; last.pt saved")

    def log(self, text: str) -> None:
        """Append ``text`` to ``train.log`` with the local time. A log line that cannot be
        written (a full disk) is dropped: the checkpoints and metrics say what happened."""
        if not self.writes or not self.path.is_dir():
            return
        with contextlib.suppress(OSError):
            with open(self.path / "train.log", "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def _draw(self, title: str) -> None:
        """Rewrite ``curves.svg`` from ``metrics.jsonl``."""
        lines = self.metrics.read_text(encoding="utf-8", errors="replace").splitlines()
        records = [json.loads(line) for line in lines if _epoch_of(line + "\n") != math.inf]
        with atomic_path(self.path / "curves.svg") as tmp:
            tmp.write_text(curves_svg(records, title), encoding="utf-8")


def epoch_line(record: dict[str, Any], epochs: int, best: bool = False) -> str:
    """``epoch 3/20: l1 0.1234, val_psnr 28.12, lr 0.0002; 12.3 s; best so far``: an epoch's
    record (a ``metrics.jsonl`` line) on one plain line."""
    values = [f"{k} {v:.4g}" for k, v in record.items()
              if k not in SKIPPED and isinstance(v, int | float) and not isinstance(v, bool)]
    parts = [f"epoch {record.get('epoch')}/{epochs}: {', '.join(values)}"]
    if isinstance(record.get("seconds"), int | float):
        parts.append(f"{record['seconds']:.1f} s")
    if record.get("stopped_at_time_limit"):
        parts.append("stopped at the time limit")
    if best:
        parts.append("best so far")
    return "; ".join(parts)


def _epoch_of(line: str) -> float:
    """The epoch of a ``metrics.jsonl`` line; infinity for a line that is not one."""
    try:
        entry = json.loads(line)
    except ValueError:
        return float("inf")
    return entry.get("epoch", 0) if isinstance(entry, dict) else float("inf")
