"""What a run leaves besides checkpoints: train.log, curves.svg, and plain epoch lines on stderr
when it is not a terminal (a scheduler's log)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest


def _train(cli, sr_data, tiny_sr, run, *extra, epochs=2):
    sets = [a for s in [*tiny_sr, f"train.epochs={epochs}"] for a in ("--set", s)]
    return cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, *sets, *extra)


def test_a_run_logs_each_epoch_and_draws_its_curves(cli, sr_data, tiny_sr, tmp_path):
    run = tmp_path / "run"
    result = _train(cli, sr_data, tiny_sr, run)
    assert result.code == 0, result.err
    # stderr is not a terminal here: one plain line per epoch, as in a SLURM log
    lines = [line for line in result.err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "val_psnr" in lines[0] and "lr 0.0002" in lines[0]
    log = (run / "train.log").read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
    assert re.match(stamp + "started demo-sr: 2 epoch", log[0])
    assert [re.sub(stamp, "", line).split(":")[0] for line in log[1:]] == ["epoch 1/2",
                                                                         "epoch 2/2"]
    root = ET.fromstring((run / "curves.svg").read_text())
    names = [t.text for t in root.iter("{http://www.w3.org/2000/svg}tspan")]
    assert {"g_loss", "val_psnr", "lr"} <= set(names)
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == len(names)


def test_quiet_and_a_resume_are_logged_in_the_run(cli, sr_data, tiny_sr, tmp_path):
    run = tmp_path / "run"
    first = _train(cli, sr_data, tiny_sr, run, "--quiet", epochs=1)
    assert first.code == 0 and first.err == ""
    again = _train(cli, sr_data, tiny_sr, run, "--resume", "--quiet")
    assert again.code == 0, again.err
    log = (run / "train.log").read_text()
    assert "resumed after epoch 1" in log and "epoch 2/2" in log


@pytest.mark.parametrize("quiet", [False, True])
def test_patchify_says_what_it_did_when_run_again(cli, sr_data, tmp_path, quiet):
    out = tmp_path / "patches"
    args = ["patchify", sr_data, out, "--preset", "demo-sr", "--set", "patch.size=[16,16,16]"]
    first = cli(*args)
    assert first.code == 0 and "already done" not in first.out
    again = cli(*args)
    assert again.code == 0 and "every case was already done" in again.out
