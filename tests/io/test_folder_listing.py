"""A folder tree listed once: names, volume suffixes, depth, and what is left out."""

from __future__ import annotations

from revmed.io.cases import list_folder, scan_folder


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_a_listing_names_cases_and_goes_as_deep_as_asked(tmp_path):
    _touch(tmp_path / "b.NII.GZ")
    _touch(tmp_path / "a" / "t1.nrrd")
    _touch(tmp_path / "a" / "deeper" / "slice.dcm")
    _touch(tmp_path / "notes.txt")  # a sidecar
    _touch(tmp_path / ".hidden.nii")
    _touch(tmp_path / "IM0001")  # a stray (a DICOM slice without a suffix)
    top = list_folder(tmp_path, depth=2)
    assert [(e.name, e.is_dir, e.suffix) for e in top] == [
        ("IM0001", False, ""), ("a", True, ""), ("b", False, ".NII.GZ")]
    folder = top[1]
    assert [(e.name, e.suffix) for e in folder.entries] == [("deeper", ""), ("t1", ".nrrd")]
    assert folder.entries[0].entries == ()  # depth 2: the folder below is not listed
    assert list_folder(tmp_path, depth=3)[1].entries[0].entries[0].path.name == "slice.dcm"
    assert [e.is_volume for e in top] == [False, False, True]


def test_scan_folder_sorts_the_listing_into_cases_strays_and_repeats(tmp_path):
    _touch(tmp_path / "c.nii.gz")
    _touch(tmp_path / "c.nrrd")
    _touch(tmp_path / "d" / "x.dcm")
    _touch(tmp_path / "IM0001")
    scan = scan_folder(tmp_path)
    assert scan.cases == {"c": tmp_path / "c.nii.gz", "d": tmp_path / "d"}
    assert scan.strays == [tmp_path / "IM0001"]
    assert scan.duplicates == [(tmp_path / "c.nrrd", tmp_path / "c.nii.gz")]
