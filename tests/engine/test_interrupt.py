"""Ctrl-C, a second Ctrl-C and SIGKILL during training, and resuming afterwards.

The runs are tiny: one training case cut into 8 patches of 16^3, batches of 2 (4 steps an
epoch), a 4-channel RevGAN with small critics. They use one CPU thread: on a busy machine,
PyTorch's thread pool makes such small steps many times slower.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from revmed import config
from revmed.checkpoint import read_payload
from revmed.data.batches import epoch_batches
from revmed.data.synthetic import synthesize
from revmed.data.training_patches import TrainingPatches
from revmed.io.folder_lock import LOCK_NAME
from revmed.engine.setup import setup_training
from revmed.engine.signals import TrainingInterrupted

TINY = ["patch.size=[16,16,16]", "patch.per_volume=8", "model.width=4", "model.depth=1",
        "model.disc_width=4", "model.disc_layers=2", "train.batch_size=2",
        "model.residual=false", "train.time_limit=0"]
RUN_FILES = {"preset.toml", "metrics.jsonl", "last.pt", "best.pt", "train.log", "curves.svg"}
MESSAGE = re.compile(r"interrupted: saved (\S+) at epoch (\d+) step (\d+); "
                     r"continue with: (revmed train .* --resume)")


def _set(*overrides):
    return [arg for item in (*TINY, *overrides) for arg in ("--set", item)]


def _preset(*overrides):
    return config.load_preset("demo-sr", [*TINY, *overrides])


#: The environment of the training subprocesses.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _temporary_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if ".tmp-" in p.name)


@pytest.fixture(autouse=True)
def ctrl_c_delivered():
    """Ctrl-C as a terminal delivers it, even when pytest itself runs with SIGINT ignored (a
    shell's background job, nohup): revmed rightly leaves an ignored SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _sigint_default() -> None:
    """In a training subprocess, before it starts: SIGINT at its default, not inherited as
    ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sr_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr") / "data"
    synthesize("chestct-sr", root, cases=3, seed=5, shape=(32, 32, 24))
    return root


def _train(sr_data, args, cwd):
    """``python -m revmed train`` in ``cwd`` (outside the checkout: the installed package)."""
    return subprocess.Popen([sys.executable, "-m", "revmed", "train", "--preset", "demo-sr",
                             "--data", str(sr_data), "--quiet", *args],
                            cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_sigint_default)


def _wait_for(condition, proc, timeout=90.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended early ({proc.returncode}):\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail("timed out waiting for the training run")
        time.sleep(0.02)


# --- the loop, in-process --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["paired", "unpaired", "segmentation"])
def test_skipped_batches_are_the_rest_of_the_epoch(kind):
    rng = np.random.default_rng(0)
    second = "label" if kind == "segmentation" else "Y"
    patches = {"X": rng.standard_normal((10, 1, 4, 4, 4)).astype(np.float32),
               second: rng.standard_normal((8 if kind == "unpaired" else 10, 1, 4, 4, 4))
               .astype(np.float32)}
    cpu = torch.device("cpu")
    full = list(epoch_batches(patches, kind, 3, seed=3, epoch=1, device=cpu))
    rest = list(epoch_batches(patches, kind, 3, seed=3, epoch=1, device=cpu, skip=2))
    assert len(full) == 3 and len(rest) == 1
    for key, value in full[2].items():  # segmentation: the same random flips too
        assert torch.equal(rest[0][key], value), key


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(sr_data, tmp_path,
                                                                  one_thread):
    preset = _preset("train.epochs=2")
    cpu = torch.device("cpu")
    reference = setup_training(preset, sr_data, tmp_path / "a", cpu)
    reference.fit()

    run_dir = tmp_path / "b"
    after_epoch_1 = {}

    def stop_at_epoch_2_step_3(event):
        if event.event == "epoch":
            after_epoch_1.update({n: (run_dir / n).read_bytes() for n in ("last.pt", "best.pt")})
        if event.event == "step" and (event.epoch, event.step) == (2, 3):
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as stop:
        setup_training(preset, sr_data, run_dir, cpu).fit(progress=stop_at_epoch_2_step_3)
    assert (stop.value.checkpoint, stop.value.epoch, stop.value.step) == (run_dir / "last.pt",
                                                                          2, 3)
    saved = read_payload(run_dir / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 3)
    assert saved["metrics"]["interrupted"] is True
    assert (run_dir / "last.pt").read_bytes() != after_epoch_1["last.pt"]
    assert (run_dir / "best.pt").read_bytes() == after_epoch_1["best.pt"]  # partial: no best.pt
    assert [r["epoch"] for r in _metrics(run_dir)] == [1]  # ... and no metrics line

    seen = []
    resumed = setup_training(preset, sr_data, run_dir, cpu, resume=True)
    resumed.fit(progress=lambda e: seen.append((e.event, e.epoch, e.step)))
    assert seen == [("step", 2, 4), ("epoch", 2, 4)]  # steps 1-3 of epoch 2 are not redone
    expected, got = reference.model.state_dict(), resumed.model.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-8)
    for name, critic in reference.training.critics.items():
        for key, value in critic.state_dict().items():
            torch.testing.assert_close(resumed.training.critics[name].state_dict()[key], value,
                                       rtol=1e-6, atol=1e-8)
    # the epoch's losses average all four steps, those before the interruption included
    for a, b in zip(_metrics(tmp_path / "a"), _metrics(run_dir), strict=True):
        a.pop("seconds"), b.pop("seconds")
        assert b == pytest.approx(a, rel=1e-6)
    assert read_payload(run_dir / "last.pt")["step_in_epoch"] == 0


def test_second_ctrl_c_while_saving_keeps_the_previous_last_pt(sr_data, tmp_path, monkeypatch,
                                                               one_thread):
    run_dir = tmp_path / "run"
    after_epoch_1 = {}

    def ctrl_c_twice(event):
        if event.event == "epoch":
            after_epoch_1["last.pt"] = (run_dir / "last.pt").read_bytes()
        if event.event == "step" and (event.epoch, event.step) == (2, 1):
            def second_ctrl_c(*args):  # lands as the interrupted save renames its file
                raise KeyboardInterrupt
            monkeypatch.setattr(os, "replace", second_ctrl_c)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stop:
        setup_training(_preset("train.epochs=2"), sr_data, run_dir, torch.device("cpu")).fit(
            progress=ctrl_c_twice)
    monkeypatch.undo()
    assert not isinstance(stop.value, TrainingInterrupted)  # nothing was saved ...
    assert (run_dir / "last.pt").read_bytes() == after_epoch_1["last.pt"]  # ... nor broken
    assert (read_payload(run_dir / "last.pt")["epoch"], _temporary_files(run_dir)) == (1, [])


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_inside_a_step_waits_for_it_and_a_second_one_does_not(sr_data, tmp_path,
                                                                     one_thread, presses):
    """The first SIGINT is held until the step is done; a second one stops at once."""
    run_dir = tmp_path / "run"
    trainer = setup_training(_preset("train.epochs=1"), sr_data, run_dir, torch.device("cpu"))
    generator_step, steps = trainer.training.objective.generator_step, []

    def ctrl_c_during_step_2(*args):
        steps.append(len(steps) + 1)
        if len(steps) == 2:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)  # let the handler run here, inside the step
        return generator_step(*args)

    trainer.training.objective.generator_step = ctrl_c_during_step_2
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stop:
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is handler
    if presses == 2:
        assert not isinstance(stop.value, TrainingInterrupted)
        assert not (run_dir / "last.pt").exists() and _temporary_files(run_dir) == []
        return
    assert isinstance(stop.value, TrainingInterrupted)
    assert (stop.value.epoch, stop.value.step, steps) == (1, 2, [1, 2])
    saved = read_payload(run_dir / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == (0, 2)
    seen = []
    setup_training(_preset("train.epochs=1"), sr_data, run_dir, torch.device("cpu"),
            resume=True).fit(progress=lambda e: seen.append((e.event, e.epoch, e.step)))
    assert seen == [("step", 1, 3), ("step", 1, 4), ("epoch", 1, 4)]


# --- the CLI, in a subprocess ----------------------------------------------------------------

def test_ctrl_c_before_training_exits_130_without_a_traceback(cli, sr_data, tmp_path,
                                                              monkeypatch):
    def ctrl_c(*args, **kwargs):  # e.g. while the data are loaded
        raise KeyboardInterrupt
    monkeypatch.setattr(TrainingPatches, "__init__", ctrl_c)
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", tmp_path / "run",
                 "--quiet", *_set())
    assert result.code == 130 and "Traceback" not in result.err
    assert result.err.strip() == (f"interrupted before the first checkpoint; nothing to resume "
                                  f"in {tmp_path / 'run'}")


def test_ctrl_c_saves_says_how_to_continue_and_exits_130(sr_data, tmp_path):
    run_dir = tmp_path / "run"
    steps = 16  # 32 patches, 2 a batch: an epoch is mostly steps
    proc = _train(sr_data, ["--out", str(run_dir), *_set("train.epochs=1000",
                                                         "patch.per_volume=32")], tmp_path)
    _wait_for(lambda: (run_dir / "last.pt").is_file(), proc)  # epoch 1 done, 2 under way
    time.sleep(0.3)  # most likely in the middle of epoch 2 then (any moment is valid)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    found = MESSAGE.fullmatch(err.strip())
    assert found, err
    path, epoch, step = Path(found[1]), int(found[2]), int(found[3])
    assert path == run_dir / "last.pt" and epoch >= 2 and 0 <= step <= steps
    saved = read_payload(path, kind="revgan3d")
    assert (saved["epoch"], saved["step_in_epoch"]) == (epoch - 1, step)
    assert [r["epoch"] for r in _metrics(run_dir)] == list(range(1, epoch))
    assert _temporary_files(run_dir) == []

    again = shlex.split(found[4])  # the printed command, told to stop after this epoch
    assert again[:2] == ["revmed", "train"] and again[again.index("--out") + 1] == str(run_dir)
    resumed = subprocess.run([sys.executable, "-m", *again, "--quiet", "--set",
                              f"train.epochs={epoch}"], cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    final = read_payload(run_dir / "last.pt")
    assert (final["epoch"], final["step_in_epoch"]) == (epoch, 0)
    record = _metrics(run_dir)[-1]
    assert record["epoch"] == epoch and record["steps"] == steps


def test_sigkill_at_a_random_moment_leaves_a_run_that_continues(sr_data, tmp_path):
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(0.0, 4.0)
    run_dir = tmp_path / "run"
    args = ["--out", str(run_dir), *_set("train.epochs=1000")]
    proc = _train(sr_data, args, tmp_path)
    _wait_for(lambda: (run_dir / "preset.toml").is_file(), proc)  # the trainer is set up
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        if _temporary_files(run_dir):  # a save under way: kill it there
            break
        time.sleep(0.001)
    proc.kill()
    proc.communicate(timeout=30)
    context = f"killed {delay:.2f} s after start-up (seed {seed})"

    names = {p.name for p in run_dir.iterdir()}
    # the run folder's lock file may stay behind a kill; the kernel released the lock itself
    assert names - RUN_FILES - {LOCK_NAME} == set(_temporary_files(run_dir)), context
    assert all(n.startswith(".") for n in _temporary_files(run_dir)), context  # hidden
    epochs_done = 0
    if (run_dir / "last.pt").exists():
        epochs_done = read_payload(run_dir / "last.pt")["epoch"]  # never corrupt
    if (run_dir / "best.pt").exists():
        read_payload(run_dir / "best.pt")
    # what a kill in the middle of a save leaves, whether or not this one landed there
    (run_dir / ".last.pt.tmp-planted.pt").write_bytes(b"PK\x03\x04 cut short")
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as log:
        log.write('{"epoch": 99, "l1": 0.')

    # without last.pt the folder holds no run to resume: starting over is asked for explicitly
    resume = ["--resume"] if (run_dir / "last.pt").exists() else ["--overwrite"]
    finish = subprocess.run([sys.executable, "-m", "revmed", "train", "--preset", "demo-sr",
                             "--data", str(sr_data), "--quiet", "--out", str(run_dir), *resume,
                             *_set(f"train.epochs={epochs_done + 1}")], cwd=tmp_path,
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, f"{context}\n{finish.stderr}"
    assert _temporary_files(run_dir) == [], context
    assert [r["epoch"] for r in _metrics(run_dir)] == list(range(1, epochs_done + 2)), context
    assert read_payload(run_dir / "last.pt")["epoch"] == epochs_done + 1, context
