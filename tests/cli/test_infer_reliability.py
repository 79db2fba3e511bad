"""`revmed infer` on bad input, in batches, and when killed: what a pipeline can rely on."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from revmed.io import Volume, make_affine, read_volume, write_volume


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_checkpoint):
    """An untrained 2x super-resolution RevGAN checkpoint (8^3 windows): fast to apply."""
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", task=None,
                           sr_factors=(2, 2, 2))


def _volume(path, shape=(6, 7, 5), seed=0, value=None):
    rng = np.random.default_rng(seed)
    array = rng.uniform(-1000, 300, size=(1, *shape)).astype(np.float32)
    if value is not None:
        array.flat[3] = value
    return write_volume(Volume(array, make_affine([1.0, 1.2, 2.0])), path)


def _cases(folder, names):
    folder.mkdir()
    for i, name in enumerate(names):
        _volume(folder / f"{name}.nii.gz", seed=i)
    return folder


def test_a_bad_case_in_a_batch_is_reported_and_the_others_are_written(cli, model, tmp_path):
    folder = _cases(tmp_path / "in", ["a", "c", "e"])
    good = (folder / "a.nii.gz").read_bytes()
    (folder / "b.nii.gz").write_bytes(good[: len(good) // 2])  # truncated
    _volume(folder / "d.nii.gz", value=np.nan)  # a NaN voxel
    result = cli("infer", folder, "-o", tmp_path / "out", "--model", model, "--quiet")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "c.nii.gz",
                                                                    "e.nii.gz"]
    lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 3  # one per bad case, then the summary
    assert "b.nii.gz" in lines[0] and "truncated" in lines[0]
    assert "d.nii.gz" in lines[1] and "NaN" in lines[1]
    assert "2 of 5 case(s) failed" in lines[2] and "other 3 were written" in lines[2]
    assert result.out.count("wrote ") == 3


def test_skip_existing_finishes_an_interrupted_batch(cli, model, tmp_path):
    folder = _cases(tmp_path / "in", ["a", "b", "c"])
    out = tmp_path / "out"
    assert cli("infer", folder / "a.nii.gz", "-o", out / "a.nii.gz", "--model", model,
               "--quiet").code == 0  # the output's folder is made for a single file
    first = (out / "a.nii.gz").stat().st_mtime_ns
    refused = cli("infer", folder, "-o", out, "--model", model, "--quiet")
    assert refused.code == 2 and "--skip-existing" in refused.err
    done = cli("infer", folder, "-o", out, "--model", model, "--skip-existing")
    assert done.code == 0, done.err
    assert "skipping 1 existing output" in done.err
    assert done.out.count("wrote ") == 2 and "a.nii.gz" not in done.out
    assert (out / "a.nii.gz").stat().st_mtime_ns == first
    both = cli("infer", folder, "-o", out, "--model", model, "--overwrite", "--skip-existing")
    assert both.code == 2 and "contradict" in both.err


def test_unwritable_destination_is_refused_before_any_work(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    source = _volume(tmp_path / "a.nii.gz")
    # the model does not exist either: the destination is checked first, before loading it
    result = cli("infer", source, "-o", blocker / "sr.nii.gz", "--model", tmp_path / "no.pt")
    assert result.code == 2
    assert "is not a folder" in result.err and "no.pt" not in result.err


def test_a_volume_smaller_than_the_window_is_padded_not_refused(cli, model, tmp_path):
    source = _volume(tmp_path / "small.nii.gz", shape=(2, 3, 2))
    result = cli("infer", source, "-o", tmp_path / "sr.nii.gz", "--model", model, "--quiet")
    assert result.code == 0, result.err
    assert read_volume(tmp_path / "sr.nii.gz").shape == (4, 6, 4)


def test_a_header_declaring_an_absurd_grid_is_refused_before_reading(cli, model, tmp_path):
    """A 4000^3 float32 NIfTI header (238 GiB of voxels) with almost no data behind it."""
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    path = tmp_path / "huge.nii.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4 + b"\0" * 1024)
    result = cli("infer", path, "-o", tmp_path / "sr.nii.gz", "--model", model)
    assert result.code == 2 and "Traceback" not in result.err
    # reading it holds the stored voxels and their float32 copy (twice 238 GiB) and a margin
    assert "huge.nii.gz" in result.err and "484 GiB" in result.err and "refused" in result.err
    assert not (tmp_path / "sr.nii.gz").exists()


def test_inference_too_large_for_memory_is_refused_with_the_estimate(cli, model, tmp_path,
                                                                    monkeypatch):
    import revmed.sizes

    source = _volume(tmp_path / "a.nii.gz", shape=(10, 10, 10))
    # 20^3 output voxels x (2 x 1 input, in HU and in the network's range, + 3 x 1 output + 2)
    # channels x 4 bytes = 224000 bytes
    monkeypatch.setattr(revmed.sizes, "available_memory", lambda: 150_000)
    result = cli("infer", source, "-o", tmp_path / "sr.nii.gz", "--model", model)
    assert result.code == 2 and "a.nii.gz" in result.err
    assert "219 KiB" in result.err and "146 KiB" in result.err
    assert not (tmp_path / "sr.nii.gz").exists()
    monkeypatch.setattr(revmed.sizes, "available_memory", lambda: 230_000)
    assert cli("infer", source, "-o", tmp_path / "sr.nii.gz", "--model", model).code == 0


def test_killed_batch_leaves_only_whole_files_and_a_rerun_finishes(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    names = [f"case{i:02d}" for i in range(24)]
    for i, name in enumerate(names):
        _volume(folder / f"{name}.nii.gz", shape=(24, 24, 16), seed=i)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "revmed", "infer", str(folder), "-o", str(out), "--model",
               str(model), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path, env=env)
    assert process.stdout.readline().startswith("wrote ")  # work is under way
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert 0 < len(written) < len(names), "the kill should land in the middle of the batch"
    for name in written:  # every file under its real name is whole
        assert read_volume(out / name).shape == (48, 48, 32)
    rerun = subprocess.run(command + ["--skip-existing"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("wrote ") == len(names) - len(written)
    # and what the killed process left under a temporary name is gone
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.nii.gz" for n in names]


def test_a_rerun_clears_the_claims_a_killed_run_left_beside_finished_outputs(cli, model,
                                                                              tmp_path):
    """A run killed after writing an output but before letting its claim go leaves the claim
    file; ``--skip-existing`` keeps the output and removes the stale claim, and leaves alone a
    claim a live run holds."""
    from revmed.io.folder_lock import OutputClaim

    folder = _cases(tmp_path / "in", ["a", "b"])
    out = tmp_path / "out"
    assert cli("infer", folder, "-o", out, "--model", model, "--quiet").code == 0
    stale, live = OutputClaim(out / "a.nii.gz"), OutputClaim(out / "b.nii.gz")
    stale.path.write_text("pid 1 on a host that was killed\n")  # a file, no lock held
    assert live.acquire()
    try:
        rerun = cli("infer", folder, "-o", out, "--model", model, "--quiet", "--skip-existing")
        assert rerun.code == 0, rerun.err
        assert not stale.path.exists() and live.path.exists()
    finally:
        live.release()
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_parts_of_a_batch_cover_every_case_once(cli, model, tmp_path):
    names = ["a", "b", "c", "d", "e"]
    folder = _cases(tmp_path / "in", names)
    seen = []
    for part in range(3):
        result = cli("infer", folder, "-o", tmp_path / "out", "--model", model, "--quiet",
                     "--num-parts", 3, "--part-id", part)
        assert result.code == 0, result.err
        seen += [line.split("/")[-1] for line in result.out.splitlines()]
    assert sorted(seen) == [f"{n}.nii.gz" for n in names]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(seen)
    bad = cli("infer", folder, "-o", tmp_path / "o2", "--model", model, "--num-parts", 2,
              "--part-id", 2)
    assert bad.code == 2 and "--part-id 2" in bad.err


@pytest.mark.parametrize("task", ["sr", "seg"])
def test_a_model_whose_output_is_not_finite_writes_nothing(cli, tmp_path, tiny_checkpoint,
                                                           task, old_checkpoints):
    """Weights x 1e30 (the RevGAN) or NaN (the iUNet, whose norms rescale any factor) in a
    checkpoint resealed with a valid checksum. Before, 97 % of the RevGAN's result was NaN and
    revmed said "wrote"; the iUNet's NaN logits became label 0 everywhere."""
    from revmed.checkpoint import read_payload, write_payload

    if task == "sr":
        good, channels = tiny_checkpoint(tmp_path / "good.pt", task=None,
                                         sr_factors=(2, 2, 2)), 1
    else:  # the 4-channel BraTS iUNet of an earlier release
        good = old_checkpoints / "iunet-seg.pt"
        channels = 4
    payload = read_payload(good)
    factor = 1e30 if task == "sr" else float("nan")
    payload["state"]["generator"] = {k: v * factor if v.is_floating_point() else v
                                     for k, v in payload["state"]["generator"].items()}
    bad = write_payload(tmp_path / "bad.pt", {k: v for k, v in payload.items()
                                              if k not in ("format", "version", "revmed")})
    array = np.random.default_rng(0).uniform(0, 300, (channels, 16, 16, 16)).astype(np.float32)
    source = write_volume(Volume(array, make_affine([1.0, 1.0, 1.0])), tmp_path / "in.nii.gz")
    result = cli("infer", source, "-o", tmp_path / "out.nii.gz", "--model", bad, "-q")
    assert result.code == 2 and not (tmp_path / "out.nii.gz").exists()
    assert result.out == ""
    (line,) = result.err.splitlines()
    assert line.startswith(f"error: {bad}: the model's output for {source} has ")
    assert "not finite" in line and "nothing was written" in line


def test_symbolic_link_loops_are_failed_cases_not_tracebacks(cli, model, tmp_path):
    batch = _cases(tmp_path / "batch", ["a"])
    os.symlink("self", batch / "self")
    os.symlink("y", batch / "x")
    os.symlink("x", batch / "y")
    result = cli("infer", batch, "-o", tmp_path / "out", "--model", model, "-q")
    assert result.code == 2 and (tmp_path / "out" / "a.nii.gz").is_file()
    loops = [line for line in result.err.splitlines() if "symbolic link loop" in line]
    assert loops == [f"error: {batch / 'self'}: symbolic link loop (to self)",
                     f"error: {batch / 'x'}: symbolic link loop (to y)",
                     f"error: {batch / 'y'}: symbolic link loop (to x)"]
    info = cli("info", batch / "self")
    assert info.code == 2
    assert info.err.strip() == f"error: {batch / 'self'}: symbolic link loop (to self)"


def test_a_second_run_writing_the_same_output_refuses(cli, model, tmp_path):
    """Before, two runs writing one new output both said "wrote" and one silently replaced
    the other. The output is claimed (a lock beside it) from before the model loads."""
    from revmed.io.folder_lock import OutputClaim

    source = _volume(tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii.gz"
    running = OutputClaim(out)  # what the first run holds while it works
    running.acquire()
    try:
        second = cli("infer", source, "-o", out, "--model", model, "-q")
    finally:
        running.release()
    assert second.code == 2 and not out.exists() and second.out == ""
    (line,) = second.err.splitlines()
    assert line.startswith(f"error: {out}: another revmed run (pid {os.getpid()} on ")
    assert line.endswith("is writing it; wait for it to end, or choose another output")
    assert cli("infer", source, "-o", out, "--model", model, "-q").code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz", "out.nii.gz"]


def test_a_batch_in_which_every_case_fails_writes_nothing_and_says_so(cli, model, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    for name in ("a", "b"):
        (batch / f"{name}.nii.gz").write_text("not a volume")
    result = cli("infer", batch, "-o", tmp_path / "out", "--model", model, "-q")
    assert result.code == 2
    assert result.err.splitlines()[-1].endswith("; nothing was written")
    assert "the other 0" not in result.err
    assert not (tmp_path / "out").exists()  # the folder this run made is gone again


def test_skip_existing_redoes_outputs_that_do_not_read(cli, model, tmp_path):
    batch = _cases(tmp_path / "batch", ["a", "b", "c"])
    out = tmp_path / "out"
    assert cli("infer", batch, "-o", out, "--model", model, "-q").code == 0
    whole = (out / "a.nii.gz").read_bytes()
    (out / "b.nii.gz").write_bytes(whole[: len(whole) // 2])  # cut short
    (out / "c.nii.gz").write_bytes(b"")  # empty
    result = cli("infer", batch, "-o", out, "--model", model, "--skip-existing")
    assert result.code == 0, result.err
    assert "redoing" in result.err and "skipping 1 existing output(s)" in result.err
    assert result.out.splitlines() == [f"wrote {out / 'b.nii.gz'}", f"wrote {out / 'c.nii.gz'}"]
    for name in "abc":
        assert read_volume(out / f"{name}.nii.gz").shape == (12, 14, 10)


def test_ctrl_c_in_a_batch_says_how_far_it_got(cli, model, tmp_path, monkeypatch):
    import revmed.inference.files as infer_files

    batch = _cases(tmp_path / "batch", ["a", "b", "c"])
    real, calls = infer_files._infer_one, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(infer_files, "_infer_one", interrupted)
    result = cli("infer", batch, "-o", tmp_path / "out", "--model", model, "-q")
    assert result.code == 130
    assert (f"interrupted: 1 of 3 case(s) were written to {tmp_path / 'out'}; run again with "
            "--skip-existing to do the rest") in result.err
