"""`atomic_path`: data flushed before the rename, the folder after it."""

from __future__ import annotations

import os

from revmed import atomic


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
