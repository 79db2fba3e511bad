"""The file formats revmed reads and writes, named by suffix: the one table of them.

A *volume* is one file of a single-file format (NIfTI, NRRD, MetaImage) or a folder of DICOM
slices. DICOM files are only read in a folder of their series (or one at a time by
``read_volume``), never as cases of their own. Sidecar files (notes, JSON, detached data
files) may sit beside volumes and are skipped wherever folders are scanned.

A volume's *case name* is its file name without the format suffix (``case_003.nii.gz`` and
``case_003.nrrd`` are both case ``case_003``), or the folder name of a DICOM series.
"""

from __future__ import annotations

from pathlib import Path

from revmed.errors import OutputError

#: NIfTI through nibabel (compound suffix first, so ``.nii.gz`` wins over ``.gz``).
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: suffix -> (ITK ImageIO class, format name) of the formats read through SimpleITK.
ITK_FORMATS = {
    ".nrrd": ("NrrdImageIO", "NRRD"),
    ".nhdr": ("NrrdImageIO", "NRRD"),
    ".mha": ("MetaImageIO", "MetaImage"),
    ".mhd": ("MetaImageIO", "MetaImage"),
}
#: The ITK formats revmed also writes. Detached-header files (.nhdr, .mhd) are read but never
#: written: their header names the data file, which would carry an atomic write's temporary name.
ITK_WRITE_SUFFIXES = (".nrrd", ".mha")
#: Single DICOM files (files without a suffix are recognised by their ``DICM`` magic instead).
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: Single-file volumes: a folder's entry with one of these is a case.
VOLUME_SUFFIXES = NIFTI_SUFFIXES + tuple(ITK_FORMATS)
#: Every suffix ``read_volume`` takes, and every suffix ``write_volume`` takes.
READ_SUFFIXES = VOLUME_SUFFIXES + DICOM_SUFFIXES
WRITE_SUFFIXES = NIFTI_SUFFIXES + ITK_WRITE_SUFFIXES
#: The output formats a writer can be asked for by name (``--format``): name -> file suffix.
#: ``dicom`` is a folder (one derived series, or a DICOM-SEG for label maps), so it has no
#: suffix and is only chosen by name: a ``.dcm`` suffix names one file, never a series.
OUTPUT_FORMATS = {"nii.gz": ".nii.gz", "nii": ".nii", "nrrd": ".nrrd", "mha": ".mha",
                  "dicom": ""}
#: Files that may sit beside volumes and are skipped (sidecars, notes, detached data files).
SIDECAR_SUFFIXES = (".json", ".txt", ".md", ".csv", ".tsv", ".raw", ".raw.gz", ".zraw", ".db",
                    ".ini")


def full_suffix(path: str | Path) -> str:
    """The format suffix of ``path`` as written (``.nii.gz``, ``.NRRD``), or its last suffix
    when it is no volume format (``.pt``), or ``""``."""
    path = Path(path)
    return volume_suffix(path) or path.suffix


def volume_suffix(path: str | Path) -> str | None:
    """The single-file volume suffix of a file name (e.g. ``.nii.gz``), or None."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[-len(suffix):]
    return None


def is_sidecar(path: str | Path) -> bool:
    """A hidden file or a sidecar, skipped wherever folders of volumes are scanned."""
    name = Path(path).name
    return name.startswith(".") or name.lower().endswith(SIDECAR_SUFFIXES)


def case_name(path: str | Path) -> str:
    """The case name of a volume file or DICOM folder: its name without the format suffix."""
    path = Path(path)
    suffix = None if path.is_dir() else volume_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def output_format(path: str | Path, fmt: str | None = None) -> str:
    """The output format (a key of ``OUTPUT_FORMATS``) of ``path`` written as ``fmt``.

    Without ``fmt`` the format comes from the suffix of ``path``; a file format needs its
    suffix on ``path``, ``dicom`` a name without one (the series folder). Raises ``OutputError``
    (``option="format"``) for an unknown format, a suffix no writer has, or a suffix that
    contradicts ``fmt``.
    """
    names = ", ".join(OUTPUT_FORMATS)
    if fmt is not None and fmt not in OUTPUT_FORMATS:
        raise OutputError(f"format {fmt}: unknown; choose one of {names}", option="format")
    suffix = (volume_suffix(path) or "").lower()
    by_suffix = next((name for name, s in OUTPUT_FORMATS.items() if s and s == suffix), None)
    if fmt is None and by_suffix is None:
        written = Path(path).suffix
        what = (f"{written!r} names one DICOM file, but a DICOM output is a series folder"
                if written.lower() in DICOM_SUFFIXES else
                f"cannot write format {written!r}" if written else "no format in its name")
        raise OutputError(f"{path}: {what}; give a name ending in "
                          f"{', '.join(WRITE_SUFFIXES)}, or a folder with format dicom",
                          fix="format")
    if fmt is not None and suffix and by_suffix != fmt:
        raise OutputError(f"{path}: its suffix {Path(path).name[-len(suffix):]!r} contradicts "
                          f"format {fmt}", fix="format")
    if fmt == "dicom" and Path(path).suffix.lower() in DICOM_SUFFIXES:
        raise OutputError(f"{path}: a DICOM output is a series folder; name it without the "
                          f"suffix {Path(path).suffix!r}")
    if fmt is not None and OUTPUT_FORMATS[fmt] and not suffix:
        raise OutputError(f"{path}: give a file name ending in {OUTPUT_FORMATS[fmt]} for "
                          f"format {fmt}")
    return fmt or by_suffix
