"""`atomic_path`: data flushed before the rename, the folder after it."""

from __future__ import annotations

import os

from revmed.io import atomic


def test_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "out.txt"
    with atomic.atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(tmp_path / ".out.txt.tmp-"))  # the data, under its temp name
    assert events[2][1] == str(tmp_path)  # then the folder that holds the new name


def test_the_next_write_removes_what_killed_writers_of_this_host_left(tmp_path):
    import subprocess
    import sys

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # a process id that no longer runs
    host, dead, alive = atomic.host_name(), finished.pid, os.getppid()
    planted = {
        "dead": f".out.nii.gz.tmp-{host}-{dead}-a1b2.nii.gz",
        "alive": f".out.nii.gz.tmp-{host}-{alive}-c3d4.nii.gz",
        "other host": f".out.nii.gz.tmp-elsewhere.example-{dead}-e5f6.nii.gz",
        "other target": f".other.nii.gz.tmp-{host}-{dead}-g7h8.nii.gz",
        "old format": ".out.nii.gz.tmp-x9y8.nii.gz",
    }
    for name in planted.values():
        (tmp_path / name).write_bytes(b"half a volume")
    with atomic.atomic_path(tmp_path / "out.nii.gz") as tmp:
        assert tmp.name.startswith(f".out.nii.gz.tmp-{host}-{os.getpid()}-")
        tmp.write_bytes(b"whole")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert planted["dead"] not in left
    assert left == sorted(["out.nii.gz", *(v for k, v in planted.items() if k != "dead")])
