"""The run folder under hostile use: folders that are not runs, --out paths that cannot be run
folders, resuming on other data, two processes on one run, a run that has finished, a dataset
of the wrong kind, and a disk that fills up."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from revmed import config
from revmed.checkpoint import read_payload
from revmed.data.synthetic import synthesize
from revmed.io.folder_lock import LOCK_NAME
from revmed.engine.setup import setup_training
from revmed.errors import OutputError
from revmed.io import atomic

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _set(tiny, *more):
    return [a for item in (*tiny, *more) for a in ("--set", item)]


def _one_line(result, *needles):
    assert result.code == 2, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def data_must_not_load(monkeypatch):
    """Fails the test if training data is loaded: the refusals must come first."""
    from revmed.data import training_patches

    def loaded(*args, **kwargs):
        raise AssertionError("the training data was loaded before the refusal")
    monkeypatch.setattr(training_patches.TrainingPatches, "__init__", loaded)


def test_a_run_without_last_pt_is_not_replaced_silently(cli, sr_data, tiny_sr, sr_model,
                                                        tmp_path, data_must_not_load):
    run = tmp_path / "run"
    shutil.copytree(sr_model.parent, run)
    (run / "last.pt").unlink()  # deleted, or never written after a failed save
    before = _snapshot(run)
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
                 *_set(tiny_sr))
    _one_line(result, run, "not empty", "best.pt", "--overwrite")
    assert _snapshot(run) == before


def test_an_unrelated_folder_keeps_its_files(cli, sr_data, tiny_sr, tmp_path,
                                             data_must_not_load):
    mine = tmp_path / "experiments"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text('{"epoch": 1, "note": "my own results"}\n' * 3)
    (mine / "notes.txt").write_text("do not lose")
    before = _snapshot(mine)
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", mine, "--quiet",
                 *_set(tiny_sr))
    _one_line(result, mine, "not empty", "metrics.jsonl", "notes.txt")
    assert _snapshot(mine) == before


def test_overwrite_starts_a_new_run_in_a_used_folder(cli, sr_data, tiny_sr, sr_model,
                                                     tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sr_model.parent, run)
    (run / "last.pt").unlink()
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
                 "--overwrite", *_set(tiny_sr))
    assert result.code == 0, result.err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]  # a new run's log
    assert read_payload(run / "last.pt")["epoch"] == 1
    # an empty folder needs nothing
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", empty, "--quiet",
               *_set(tiny_sr)).code == 0


def test_a_run_stopped_before_its_first_save_starts_again(cli, sr_data, tiny_sr, tmp_path):
    """Killed while loading its data, a run leaves preset.toml (and maybe a temporary file):
    nothing to lose, so the same command starts it again."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "preset.toml").write_text('name = "demo-sr"\n')
    (run / f".last.pt.tmp-{atomic.host_name()}-999999999-x.pt").write_bytes(b"half")
    (run / "metrics.jsonl").write_text('{"epoch": 1, "l1": 0.')  # a torn line, no whole one
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
                 *_set(tiny_sr))
    assert result.code == 0, result.err
    assert read_payload(run / "last.pt")["epoch"] == 1
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("case", ["a file", "under a file", "read-only"])
def test_an_out_that_cannot_be_a_run_folder_is_refused_before_loading(
        cli, sr_data, tiny_sr, tmp_path, monkeypatch, data_must_not_load, case):
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    out = {"a file": taken, "under a file": taken / "run",
           "read-only": tmp_path / "ro" / "run"}[case]
    if case == "read-only":  # as a read-only mount answers (root ignores permission bits)
        (tmp_path / "ro").mkdir()

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", out, "--quiet",
                 *_set(tiny_sr))
    _one_line(result, out, {"a file": "is a file", "under a file": "is not a folder",
                            "read-only": "Read-only file system"}[case])
    assert taken.read_text() == "x"


@pytest.fixture(scope="module")
def other_data(tmp_path_factory):
    """Another dataset like ``sr_data``: same kind, channels, case names and shapes."""
    root = tmp_path_factory.mktemp("other") / "data"
    synthesize("chestct-sr", root, cases=3, seed=9, shape=(24, 24, 16))
    return root


def test_resume_on_other_data_is_refused_but_a_copy_of_the_data_resumes(
        cli, sr_data, other_data, tiny_sr, sr_model, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sr_model.parent, run)
    before = _snapshot(run)
    longer = _set(tiny_sr, "train.epochs=2")
    refused = cli("train", "--preset", "demo-sr", "--data", other_data, "--out", run,
                  "--resume", "--quiet", *longer)
    _one_line(refused, "last.pt", f"trained on {sr_data}", f"not {other_data}", "--data")
    assert _snapshot(run) == before
    staged = tmp_path / "scratch" / "data"  # the same data, staged elsewhere for a job
    shutil.copytree(sr_data, staged)
    resumed = cli("train", "--preset", "demo-sr", "--data", staged, "--out", run, "--resume",
                  "--quiet", *longer)
    assert resumed.code == 0, resumed.err
    assert read_payload(run / "last.pt")["epoch"] == 2


def test_resume_with_another_network_names_every_key_and_the_set_values(
        cli, sr_data, tiny_sr, sr_model, tmp_path):
    """A preset that now builds another network (as the paper-named presets did when they
    changed to the authors' layers) names every key that differs and the --set values that
    resume the run as it was trained."""
    run = tmp_path / "run"
    shutil.copytree(sr_model.parent, run)
    before = _snapshot(run)
    changed = _set(tiny_sr, "train.epochs=2", "model.encoder='srcnn'", "model.layers='authors'")
    refused = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--resume",
                  "--quiet", *changed)
    _one_line(refused, "model.encoder = 'srcnn-relu', model.layers = 'revmed'",
              "not 'srcnn', 'authors'",
              "--set model.encoder='srcnn-relu' --set model.layers='revmed'")
    assert _snapshot(run) == before
    resumed = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--resume",
                  "--quiet", *_set(tiny_sr, "train.epochs=2", "model.encoder='srcnn'",
                                   "model.layers='authors'", "model.encoder='srcnn-relu'",
                                   "model.layers='revmed'"))
    assert resumed.code == 0, resumed.err


def test_resuming_a_finished_run_says_so(cli, sr_data, tiny_sr, sr_model, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sr_model.parent, run)
    before = _snapshot(run)
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--resume",
                 *_set(tiny_sr))
    assert result.code == 0, result.err
    assert "has done its 1 epoch(s) already" in result.out and "val_psnr" in result.out
    assert "no validation split" not in result.out
    assert _snapshot(run) == before


def test_one_process_at_a_time_in_a_run_folder(sr_data, tiny_sr, sr_model, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sr_model.parent, run)
    preset = config.load_preset("demo-sr", [*tiny_sr, "train.epochs=2"])
    cpu = torch.device("cpu")
    first = setup_training(preset, sr_data, run, cpu, resume=True)
    # a save of the first process under way: the second must not tidy it away
    writing = run / f".last.pt.tmp-{atomic.host_name()}-{os.getpid()}-busy.pt"
    writing.write_bytes(b"half")
    with pytest.raises(OutputError, match="in use by another revmed train"):
        setup_training(preset, sr_data, run, cpu, resume=True)
    assert writing.read_bytes() == b"half"
    writing.unlink()
    first.fit()
    metrics = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text()
               .splitlines()]
    assert metrics == [1, 2]  # every epoch once
    assert not (run / LOCK_NAME).exists()  # released at the end
    setup_training(preset, sr_data, run, cpu, resume=True)  # and free for the next one


def test_a_killed_holder_does_not_leave_the_lock_stuck(cli, sr_data, tiny_sr, sr_model,
                                                       tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sr_model.parent, run)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from revmed.io.folder_lock import FolderLock; "
        f"lock = FolderLock({str(run)!r}); lock.acquire(); print('held', flush=True); "
        "time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    busy = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--resume",
               "--quiet", *_set(tiny_sr, "train.epochs=2"))
    _one_line(busy, run, "in use by another revmed train", f"pid {holder.pid}")
    holder.kill()
    holder.wait()
    assert (run / LOCK_NAME).exists()  # left behind by the kill, but not locked
    done = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--resume",
               "--quiet", *_set(tiny_sr, "train.epochs=2"))
    assert done.code == 0, done.err
    assert read_payload(run / "last.pt")["epoch"] == 2


def test_a_dataset_of_the_wrong_kind_is_named_as_such(cli, tmp_path, tiny_sr,
                                                      data_must_not_load):
    seg = tmp_path / "seg"
    synthesize("brats-seg", seg, cases=3, seed=0, shape=(16, 16, 16))
    result = cli("train", "--preset", "demo-sr", "--data", seg, "--out", tmp_path / "run",
                 "--quiet", *_set(tiny_sr))
    _one_line(result, seg, "holds a segmentation dataset", "cannot train the paired objective",
              "demo-sr")
    assert "channel" not in result.err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("which", [".last.pt", ".preset.toml", "metrics"])
def test_a_full_disk_is_one_line_and_keeps_a_run_that_resumes(cli, sr_data, tiny_sr, tmp_path,
                                                              monkeypatch, which):
    run = tmp_path / "run"
    real_sync, real_open = atomic.sync_path, open

    def full(path):
        if Path(path).name.startswith(which):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_sync(path)

    def full_log(file, mode="r", *args, **kwargs):
        if str(file).endswith("metrics.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    if which == "metrics":
        monkeypatch.setattr("builtins.open", full_log)
    else:
        monkeypatch.setattr(atomic, "sync_path", full)
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
                 *_set(tiny_sr))
    _one_line(result, "No space left on device")
    assert "Traceback" not in result.err
    if which != ".preset.toml":
        assert "nothing was saved yet" in result.err
    if run.exists():  # a start that failed removes the folder it made
        assert not [p for p in run.iterdir() if ".tmp-" in p.name]
        assert not (run / "best.pt").exists() and not (run / ".revmed.lock").exists()
    monkeypatch.undo()
    # the folder holds nothing of the failed save: it starts again as it is (before, best.pt
    # and a metrics line were left, and it neither resumed nor started without --overwrite)
    again = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
                *_set(tiny_sr))
    assert again.code == 0, again.err


def test_a_full_disk_at_best_pt_keeps_last_pt_and_resumes(cli, sr_data, tiny_sr, tmp_path,
                                                          monkeypatch):
    run = tmp_path / "run"
    real_sync = atomic.sync_path

    def full(path):
        if Path(path).name.startswith(".best.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_sync(path)
    monkeypatch.setattr(atomic, "sync_path", full)
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
                 *_set(tiny_sr, "train.epochs=2"))
    _one_line(result, run / "best.pt", "No space left on device",
              "keeps the state after epoch 1")
    monkeypatch.undo()
    assert read_payload(run / "last.pt")["epoch"] == 1
    again = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
                "--resume", *_set(tiny_sr, "train.epochs=2"))
    assert again.code == 0, again.err


def test_a_full_disk_in_the_middle_of_a_run_keeps_the_last_epoch(cli, sr_data, tiny_sr,
                                                                 tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
               *_set(tiny_sr)).code == 0
    real_sync = atomic.sync_path

    def full(path):
        if Path(path).name.startswith(".last.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_sync(path)
    monkeypatch.setattr(atomic, "sync_path", full)
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
                 "--resume", *_set(tiny_sr, "train.epochs=2"))
    _one_line(result, run / "last.pt", "No space left on device",
              "keeps the state after epoch 1")
    monkeypatch.undo()
    assert read_payload(run / "last.pt")["epoch"] == 1
    again = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--quiet",
                "--resume", *_set(tiny_sr, "train.epochs=2"))
    assert again.code == 0, again.err
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_a_preset_name_never_leads_out_of_runs(tmp_path):
    from revmed.cli.train_command import _new_run_folder

    for name in ("plain", "../../escaped", "/abs/path", "..", "a b/c"):
        folder = _new_run_folder(name, resume=False, job=None)
        assert folder.parent == Path("runs") and "/" not in folder.name
        assert not folder.name.startswith(".")


def _wait_for(condition, proc, timeout=90.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training ended early ({proc.returncode}): {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out")
        time.sleep(0.02)


@pytest.mark.parametrize(("signum", "name", "code"), [(15, "SIGTERM", 143), (10, "SIGUSR1", 138)])
def test_sigterm_and_sigusr1_save_and_say_how_to_continue(sr_data, tiny_sr, tmp_path, signum,
                                                          name, code):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "revmed", "train", "--preset", "demo-sr", "--data", str(sr_data),
         "--out", str(run), "--quiet", *_set(tiny_sr, "train.epochs=1000",
                                             "patch.per_volume=16")],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run / "last.pt").is_file(), proc)
    time.sleep(0.3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"interrupted by {name}: saved {run}/last.pt")
    assert "continue with: revmed train" in lines[0] and lines[0].endswith("--resume")
    saved = read_payload(run / "last.pt")
    resumed = subprocess.run(
        [sys.executable, "-m", "revmed", "train", "--preset", "demo-sr", "--data", str(sr_data),
         "--out", str(run), "--quiet", "--resume",
         *_set(tiny_sr, f"train.epochs={saved['epoch'] + 1}", "patch.per_volume=16")],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert read_payload(run / "last.pt")["epoch"] == saved["epoch"] + 1


def test_resume_without_data_uses_the_data_the_run_trained_on(cli, sr_data, tiny_sr, tmp_path):
    sets = [a for s in (*tiny_sr, "train.epochs=1") for a in ("--set", s)]
    run = tmp_path / "run"
    assert cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "-q",
               *sets).code == 0
    more = [a for s in (*tiny_sr, "train.epochs=2") for a in ("--set", s)]
    result = cli("train", "--preset", "demo-sr", "--out", run, "--resume", *more)
    # before: the preset's data/demo-sr, which does not exist here
    assert result.code == 0, result.err
    assert f"resuming on {sr_data.resolve()}, the data the run trained on" in result.err
