"""The memory guard: it sees the limits schedulers and containers set, and its estimate of a
read is not below what the read really takes."""

from __future__ import annotations

import os
import subprocess
import tempfile
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from revmed import sizes

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # run outside the checkout, whose revmed/ would shadow the installed package
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=ENV,
                          capture_output=True, text=True, timeout=timeout,
                          cwd=tempfile.gettempdir())


def test_an_address_space_limit_refuses_a_read_that_would_fail(tmp_path):
    """Under ``ulimit -v`` (RLIMIT_AS, as SLURM sets it) a volume that does not fit is refused
    with one line, instead of a MemoryError traceback half-way."""
    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((400, 400, 400), np.int16), np.eye(4)), path)
    done = _python(f"""
        import resource, sys
        from revmed.io import read_volume  # the libraries first: they map memory at import
        from revmed import sizes
        vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
              if l.startswith("VmSize:")][0]
        resource.setrlimit(resource.RLIMIT_AS, (vm + (150 << 20), resource.RLIM_INFINITY))
        left = sizes.available_memory()
        print("left", left, file=sys.stderr)
        assert left <= 150 << 20, left
        from revmed.cli.app import run
        sys.exit(run(["info", {str(path)!r}]))
    """)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("left")]
    assert len(lines) == 1 and "refused before allocating" in lines[0], done.stderr
    assert "MemoryError" not in done.stderr


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_cgroup_v2_limit_at_any_level_is_seen(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory")
    _write(root / "job" / "memory.max", str(1 << 30))
    _write(root / "job" / "memory.current", str(600 << 20))
    _write(root / "job" / "memory.stat", f"anon 1\ninactive_file {100 << 20}\n")
    _write(root / "job" / "step" / "memory.max", "max")
    _write(root / "job" / "step" / "memory.current", "5")
    listing = tmp_path / "cgroup-listing"
    listing.write_text("0::/job/step\n")
    # 1 GiB less 600 MiB used, of which 100 MiB is page cache the kernel drops
    assert sizes.cgroup_memory_left(root, listing) == (1 << 30) - (500 << 20)


def test_a_cgroup_v1_memory_limit_is_seen(tmp_path):
    root = tmp_path / "cgroup"
    job = root / "memory" / "slurm" / "uid_1" / "job_7"
    _write(job / "memory.limit_in_bytes", str(2 << 30))
    _write(job / "memory.usage_in_bytes", str(1 << 30))
    _write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712")  # no limit
    _write(root / "memory" / "memory.usage_in_bytes", "1")
    listing = tmp_path / "cgroup-listing"
    listing.write_text("12:pids:/slurm\n4:memory:/slurm/uid_1/job_7\n0::/\n")
    assert sizes.cgroup_memory_left(root, listing) == 1 << 30


def test_the_least_of_the_limits_is_what_is_available(monkeypatch):
    monkeypatch.setattr(sizes, "system_memory", lambda: 8 << 30)
    monkeypatch.setattr(sizes, "address_space_left", lambda: None)
    monkeypatch.setattr(sizes, "cgroup_memory_left", lambda: 2 << 30)
    assert sizes.available_memory() == 2 << 30
    monkeypatch.setattr(sizes, "cgroup_memory_left", lambda: None)
    assert sizes.available_memory() == 8 << 30


MEASURE = """
    import sys
    import revmed.io.dicom.reader, revmed.io.nifti, revmed.io.sitk_formats
    from revmed.io import read_volume
    estimates = []
    for module in (revmed.io.nifti, revmed.io.sitk_formats, revmed.io.dicom.reader):
        real = module.require_memory
        module.require_memory = lambda source, needed, what, real=real: (
            estimates.append(needed), real(source, needed, what))
    def status(key):
        return [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                if l.startswith(key)][0]
    open("/proc/self/clear_refs", "w").write("5")  # the peak starts from here
    before = status("VmRSS:")
    volume = read_volume(sys.argv[1])
    print(max(estimates), status("VmHWM:") - before, volume.array.nbytes)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("kind", ["scaled int16 NIfTI", "float64 NIfTI", "NRRD",
                                  "DICOM series", "tilted DICOM series"])
def test_the_estimate_of_a_read_covers_its_peak(tmp_path, kind):
    rng = np.random.default_rng(0)
    if kind.endswith("DICOM series"):  # tilted: read onto a regular grid, the resampling's peak
        path = _ct_series(tmp_path / "ct", rng, tilt=18.5 if kind.startswith("tilted") else 0)
    elif kind == "NRRD":
        from revmed.io import Volume, make_affine, write_volume

        array = rng.normal(0, 100, (1, 200, 200, 200)).astype(np.float32)
        path = write_volume(Volume(array, make_affine((1, 1, 1))), tmp_path / "v.nrrd")
    else:
        dtype = np.int16 if kind.startswith("scaled") else np.float64
        image = nib.Nifti1Image(rng.integers(-1000, 1000, (200, 200, 200)).astype(dtype),
                                np.eye(4))
        image.header.set_data_dtype(dtype)
        if kind.startswith("scaled"):
            image.header.set_slope_inter(2.0, -1024.0)
        path = tmp_path / "v.nii.gz"
        nib.save(image, path)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURE), str(path)],
                          env=ENV, capture_output=True, text=True, timeout=120,
                          cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr
    estimate, peak, result = map(int, done.stdout.split())
    assert peak > result  # the measurement sees the read
    assert estimate >= peak, (kind, estimate / 2**20, peak / 2**20)


def _ct_series(folder, rng, tilt, slices=120, size=256):
    """A CT series of ``slices`` ``size``^2 int16 slices with a gantry tilt of ``tilt``
    degrees."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir()
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    tilt = np.radians(tilt)
    uid = generate_uid()
    for k in range(slices):
        ds = source.copy()
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.ImageOrientationPatient = [1, 0, 0, 0, f"{np.cos(tilt):.8f}", f"{-np.sin(tilt):.8f}"]
        ds.ImagePositionPatient = [0, 0, f"{2.5 * k:.3f}"]
        ds.Rows = ds.Columns = size
        ds.PixelData = rng.integers(0, 2000, (size, size)).astype("<i2").tobytes()
        ds.save_as(folder / f"{k:04d}.dcm")
    return folder



def _limited_run(args: list[str], room: int) -> subprocess.CompletedProcess:
    """``revmed ARGS`` under an address-space limit ``room`` bytes above what the process
    maps once its libraries are imported."""
    return _python(f"""
        import resource, sys
        from revmed.io import read_volume  # the libraries first: they map memory at import
        import revmed.evaluation, torch, monai.metrics
        from revmed.cli.app import run
        vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
              if l.startswith("VmSize:")][0]
        resource.setrlimit(resource.RLIMIT_AS, (vm + {room}, resource.RLIM_INFINITY))
        sys.exit(run({[str(a) for a in args]!r}))
    """)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_info_needs_no_more_memory_than_the_read(tmp_path):
    """Before, `revmed info` took a finite-only copy of the volume (and a mask) after
    reading it: a volume that could just be read ended in a MemoryError."""
    path = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(np.ones((256, 256, 160), np.int16), np.eye(4)), path)
    done = _python(f"""
        import sys
        from revmed.cli.app import run
        from revmed.cli import data_commands  # noqa: F401
        from revmed.io import read_volume
        read_volume({str(path)!r})  # imports what the read imports, outside the measure
        def status(key):
            return [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                    if l.startswith(key)][0]
        open("/proc/self/clear_refs", "w").write("5")
        before = status("VmRSS:")
        code = run(["info", {str(path)!r}])
        print(status("VmHWM:") - before, file=sys.stderr)
        sys.exit(code)
    """)
    assert done.returncode == 0, done.stderr
    peak = int(done.stderr.strip().splitlines()[-1])
    result = 256 * 256 * 160 * 4  # the float32 volume; the int16 file is half of it
    assert peak < 1.75 * result, peak / result  # before: about 2.75 (a copy and a mask)


def test_eval_is_refused_before_scoring_when_memory_is_short(tmp_path):
    path = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(np.ones((256, 256, 160), np.int16), np.eye(4)), path)
    done = _limited_run(["eval", path, path, "--data-range", "100"], 200 << 20)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {path}: the scores of its 256x256x160 grid against the "
                           "reference need about ") and "refused before allocating" in line
