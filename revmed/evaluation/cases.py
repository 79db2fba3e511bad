"""Pairing the files of an evaluation by case name (the case rule of ``revmed.io.cases``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from revmed.errors import InputError
from revmed.io.cases import find_cases
from revmed.io.formats import case_name


@dataclass
class CaseFiles:
    """The files of one case: prediction and reference, optional mask and low-res input."""

    name: str
    prediction: Path
    reference: Path
    mask: Path | None = None
    input: Path | None = None

    def as_dict(self) -> dict[str, str]:
        files = {"prediction": self.prediction, "reference": self.reference,
                 "mask": self.mask, "input": self.input}
        return {k: str(v) for k, v in files.items() if v is not None}


def _volumes(path: Path) -> dict[str, Path] | None:
    """Case name -> volume of a folder of cases; None for a single volume."""
    cases = find_cases(path)
    if cases is None:
        return None
    for name, case in cases.items():
        if case.problem:
            raise InputError(case.problem)
        if len(case.files) > 1:
            raise InputError(f"{case.files[0].parent}: a case of one file per channel; "
                             "evaluation takes one volume per case")
        if case.series:
            raise InputError(f"{case.files[0]}: holds several DICOM series (case {name!r}); "
                             "evaluation takes one series per folder")
    return {name: case.files[0] for name, case in cases.items() if not case.skip}


def _missing(problems: list[str], option: str | None = None) -> InputError:
    shown = problems[:10]
    more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
    return InputError("; ".join(shown) + more, option=option)


def match_cases(prediction: str | os.PathLike, reference: str | os.PathLike,
                mask: str | os.PathLike | None = None,
                input: str | os.PathLike | None = None) -> list[CaseFiles]:  # noqa: A002
    """Pair the files of an evaluation by case name; returns the cases sorted by name.

    ``prediction`` and ``reference`` are two volumes (files or DICOM series folders) or two
    folders of cases. In folders, a case is a volume file named after the case plus its format
    suffix (``case_003.nii.gz`` pairs with ``case_003.nrrd``) or a DICOM sub-folder. Every
    prediction needs a reference and every reference a prediction: a case on one side only is
    an ``InputError`` listing all such cases. ``mask`` and ``input`` (low-resolution inputs for
    the baselines) follow the same form as the reference; with folders they must hold every
    case (extra files are ignored).
    """
    pred, ref = Path(prediction), Path(reference)
    pred_cases, ref_cases = _volumes(pred), _volumes(ref)
    extras = {"mask": None if mask is None else Path(mask),
              "input": None if input is None else Path(input)}
    if (pred_cases is None) != (ref_cases is None):
        file_, folder = (pred, ref) if pred_cases is None else (ref, pred)
        raise InputError(f"{file_} is one volume but {folder} is a folder of cases; give two "
                         f"volumes or two folders")
    if pred_cases is None or ref_cases is None:
        for option, path in extras.items():
            if path is not None and _volumes(path) is not None:
                raise InputError(f"{path}: the {option} is a folder of cases, but the "
                                 "prediction and reference are single volumes; give one volume",
                                 option=option)
        return [CaseFiles(case_name(ref), pred, ref, extras["mask"], extras["input"])]
    problems = [f"{ref / name}: missing; no reference for the prediction {path}"
                for name, path in pred_cases.items() if name not in ref_cases]
    problems += [f"{pred / name}: missing; no prediction for the reference {path}"
                 for name, path in ref_cases.items() if name not in pred_cases]
    extra_cases: dict[str, dict[str, Path]] = {}
    about = None  # the last extra with a missing case, for the command line's flag
    for option, path in extras.items():
        if path is None:
            continue
        found = _volumes(path)
        if found is None:
            raise InputError(f"{path}: the {option} must be a folder of cases like {ref}, not "
                             "a single volume", option=option)
        extra_cases[option] = found
        lacking = [f"{path / name}: missing; the {option} has no volume for case {name!r}"
                   for name in sorted(ref_cases) if name in pred_cases and name not in found]
        problems += lacking
        about = option if lacking else about
    if problems:
        raise _missing(problems, about)
    return [CaseFiles(name, pred_cases[name], ref_cases[name],
                      extra_cases.get("mask", {}).get(name), extra_cases.get("input", {}).get(name))
            for name in sorted(ref_cases)]
