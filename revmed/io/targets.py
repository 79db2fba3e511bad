"""Where the outputs of a run over inputs go: one target per case, checked before any work.

``plan_targets`` turns the inputs of ``revmed infer`` (one volume, several channel files, a
folder of cases or a DICOM tree) and its output path into ``Target``s: a case (``CaseSource``)
and the path its result is written to. Everything that can be known about the outputs without
running a model is checked there, so that a bad output path fails before a model is loaded:
the format (from ``--format`` or the suffix), that the output folder can be made, that no
output lands on an input (also through symbolic links, hard links and DICOM folders), and
that a folder a DICOM output would replace holds only DICOM files.

In a batch (a folder of cases), the output is a folder and case ``NAME`` is written to
``OUT/NAME.nii.gz`` (or the suffix of the chosen format), or to the series folder ``OUT/NAME/``
for DICOM; case names of DICOM trees (``p01__ct__s3``) say which series each output is from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from revmed.errors import InputError, OutputError
from revmed.io.atomic import check_name_lengths, check_output_folder
from revmed.io.cases import CaseSource, find_cases
from revmed.io.folder_write import check_replaceable
from revmed.io.formats import DICOM_SUFFIXES, OUTPUT_FORMATS, output_format, volume_suffix


@dataclass(frozen=True)
class Target:
    """One case of a run and the path its result goes to (a file, or a DICOM series folder)."""

    name: str
    case: CaseSource
    path: Path


@dataclass(frozen=True)
class Plan:
    """The targets of a run: ``batch`` when the input is a folder of cases (the output is then
    a folder), ``format`` the output format (a key of ``OUTPUT_FORMATS``)."""

    targets: list[Target]
    batch: bool
    format: str


def plan_targets(inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
                 fmt: str | None = None, series: str | None = None) -> Plan:
    """The targets of ``inputs`` written to ``output`` as ``fmt`` (None: from the suffix of a
    single output, ``nii.gz`` for a batch). Several inputs are the channels of one case;
    ``series`` picks one series of a DICOM folder (the input is then one volume). Raises
    ``OutputError`` / ``InputError`` for what the module doc lists."""
    inputs, output = [Path(p) for p in inputs], Path(output)
    if not inputs:
        raise InputError("no input given")
    if len(inputs) > 1 or series is not None:
        cases = None
        for path in inputs:
            if not path.exists():
                find_cases(path)  # raises: no such file, or a broken link
    else:
        cases = find_cases(inputs[0])
    if cases is None:
        fmt = output_format(output, fmt)
        if fmt != "dicom" and output.is_dir():
            raise OutputError(f"{output}: is a folder; give an output file name")
        name = inputs[0].name
        targets = [Target(name, CaseSource(tuple(inputs), series=series), output)]
    else:
        fmt = fmt or "nii.gz"
        output_format(f"case{OUTPUT_FORMATS.get(fmt, '')}", fmt)  # an unknown name fails here
        _check_batch_folder(output, inputs[0])
        targets = [Target(name, case, output / f"{name}{OUTPUT_FORMATS[fmt]}")
                   for name, case in cases.items()]
    check_output_folder(output if cases is not None else output.parent)
    for target in targets:
        check_name_lengths(target.path)
    check_not_inputs(targets)
    if fmt == "dicom":
        for target in targets:
            check_replaceable(target.path)
    return Plan(targets, cases is not None, fmt)


def _check_batch_folder(output: Path, source: Path) -> None:
    if _resolved(source) in [_resolved(output), *_resolved(output).parents]:
        raise OutputError(f"{output}: is inside INPUT {source}; the outputs would be taken "
                          "for a case of it on the next run, choose a folder outside it")
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: INPUT is a folder of cases, so the output must be a "
                          "folder")
    if volume_suffix(output) or output.suffix.lower() in DICOM_SUFFIXES:
        raise OutputError(f"{output}: INPUT is a folder of cases, so the output is a folder; "
                          "give a folder name without a file suffix")


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing ``path`` (the same for every link to it)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _resolved(path: Path) -> Path:
    """``path`` with its links resolved; as far as they go for a symbolic link loop."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a link loop (RuntimeError before Python 3.13)
        return path.absolute()


def check_not_inputs(targets: Sequence[Target]) -> None:
    """``OutputError`` when a target is one of the inputs of the run (any case's, also
    through symbolic or hard links), or a folder that holds one: writing it would replace or
    delete input data."""
    sources = {_resolved(path): path for target in targets for path in target.case.files}
    by_identity = {_identity(real): path for real, path in sources.items()}
    by_identity.pop(None, None)
    holders = {folder: path for real, path in sources.items() for folder in real.parents}
    for target in targets:
        out = _resolved(target.path)
        source = sources.get(out) or by_identity.get(_identity(out))
        if source is not None:
            raise OutputError(f"{target.path}: is also an input ({source}); writing it "
                              "would replace the input, choose another output")
        if out in holders:
            raise OutputError(f"{target.path}: holds the input {holders[out]}; writing it "
                              "would replace the input, choose another output")
