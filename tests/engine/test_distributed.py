"""`torchrun -m revmed train` with two CPU processes (gloo) on a tiny RevGAN.

Each process takes half of every batch and DDP averages the gradients, so two processes must
train exactly what one process trains with the same preset (to floating-point summation
order), end with the same weights on both ranks, and write one run folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from revmed.data.synthetic import synthesize
from revmed.checkpoint import read_payload
from revmed.config import preset_from_dict
from revmed.models import build_critics, build_model

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend")

TINY = ["patch.size=[16,16,16]", "patch.per_volume=4", "model.width=4", "model.depth=2",
        "model.disc_width=4", "model.disc_layers=2", "train.batch_size=4", "train.epochs=2",
        "model.residual=false", "train.time_limit=0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _set(*overrides):
    return [arg for item in (*TINY, *overrides) for arg in ("--set", item)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp") / "data"
    synthesize("chestct-sr", root, cases=4, seed=2, shape=(24, 24, 16))
    return root


def _torchrun(tmp_path, *args, processes=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
               str(processes), "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               "-m", "revmed", "train", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=ENV,
                          timeout=600)


def _failure(done: subprocess.CompletedProcess) -> str:
    """What a failed torchrun said: its output's start (a rank's own error comes first) and
    end (torchrun's summary), and whether rank 0 got as far as printing its record."""
    err = done.stderr
    middle = "\n...\n" if len(err) > 6000 else ""
    return (f"stdout: {len(done.stdout)} characters\n{err[:3000]}{middle}"
            f"{err[-3000:] if middle else err[3000:]}")


def test_two_processes_train_what_one_trains_and_write_one_run(data, tmp_path, cli):
    one = tmp_path / "one"
    single = cli("train", "--preset", "demo-sr", "--data", data, "--out", one, "--quiet",
                 *_set())
    assert single.code == 0, single.err

    two = tmp_path / "two"
    done = _torchrun(tmp_path, "--preset", "demo-sr", "--data", data, "--out", two, "--json",
                     "--device", "cpu", *_set())
    assert done.returncode == 0, _failure(done)
    record = json.loads(done.stdout)  # rank 0 alone prints, so stdout is one JSON document
    assert record["processes"] == 2 and record["epoch"] == 2
    assert record["rank_weight_spread"] == 0.0  # both ranks hold identical weights

    assert sorted(p.name for p in two.iterdir() if not p.name.startswith(".")) == [
        "best.pt", "curves.svg", "last.pt", "metrics.jsonl", "preset.toml", "train.log"]
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # written once, by rank 0

    # The same function: F, G and the critics give the same outputs. (Weights are compared
    # through outputs because a convolution bias in front of an instance norm has a gradient
    # of pure rounding noise, which Adam turns into steps of its learning rate either way.)
    a, b = read_payload(one / "last.pt"), read_payload(two / "last.pt")
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    nets = [build_model(c["model"]["kind"], **c["model"]["kwargs"]) for c in (a, b)]
    for net, c in zip(nets, (a, b)):
        net.load_state_dict(c["state"]["generator"])
        net.eval()
    with torch.no_grad():
        torch.testing.assert_close(nets[1](x), nets[0](x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(nets[1].reverse(x), nets[0].reverse(x), rtol=1e-4, atol=1e-4)
        presets = [preset_from_dict(c["preset"], "test") for c in (a, b)]
        critics = [build_critics(p.model, p.data, p.train.objective, p.patch.size)
                   for p in presets]
        for key in critics[0]:
            for critic, c in zip((critics[0][key], critics[1][key]), (a, b)):
                critic.load_state_dict(c["state"]["critics"][key])
            pair = torch.cat([x, x.flip(2)], 1)
            torch.testing.assert_close(critics[1][key](pair), critics[0][key](pair), rtol=1e-4,
                                       atol=1e-4)
    b = b["state"]
    steps = sum(json.loads(line)["steps"] for line in lines)
    assert steps >= 4  # both runs really trained: Adam counted every step
    assert all(int(s["step"]) == steps for s in b["opt_g"]["state"].values())


def test_a_batch_that_does_not_split_evenly_is_refused(data, tmp_path):
    done = _torchrun(tmp_path, "--preset", "demo-sr", "--data", data, "--out", tmp_path / "r",
                     "--device", "cpu", *_set("train.batch_size=3"))
    assert done.returncode != 0
    assert "train.batch_size 3 must be a multiple of the 2 processes" in done.stderr
    assert not (tmp_path / "r" / "last.pt").exists()
