"""Writing a label map as a DICOM Segmentation (DICOM-SEG) of the series it was computed from.

A DICOM-SEG is one multi-frame file that refers to the slices of its source series by their
SOP Instance UIDs and shares their patient, study and frame of reference, so PACS viewers show
it over the source. It is built with highdicom (``highdicom.seg.Segmentation``), the maintained
implementation of that information object, rather than by hand: the functional groups, segment
and dimension sequences and the bit-packed frames are easy to get subtly wrong.

Each non-zero label value is one segment (binary frames, one per slice and segment, empty
frames kept so that every viewer can stack them). A segment is labelled by its name (e.g.
``ET``) and coded with SNOMED CT concepts (``SEGMENT_CODES``, "Tissue" for names not listed).
A DICOM-SEG needs a DICOM source: a label map computed from NIfTI, NRRD or MHA input is an
``OutputError`` (write it as a label map file instead).

``read_dicom_seg`` reads a DICOM-SEG back as what it is: a label map (each voxel the number of
its segment, 0 for none) with the segments' names, never as an image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid
from pydicom.valuerep import format_number_as_ds

from revmed.errors import OutputError
from revmed.io.dicom.write import (derived_number, save_dataset, software_version,
                                   source_files)
from revmed.io.folder_write import atomic_folder
from revmed.io.volume import LPS_TO_RAS, Volume, spacing_of

#: SNOMED CT (category, type) of the segments revmed's label sets name (pydicom's
#: ``codes.SCT`` names, looked up when writing: the code tables are slow to import); any other
#: segment is "Tissue".
SEGMENT_CODES = {
    "NCR": ("MorphologicallyAbnormalStructure", "Necrosis"),
    "ED": ("MorphologicallyAbnormalStructure", "Edema"),
    "ET": ("MorphologicallyAbnormalStructure", "Neoplasm"),
}
SEG_FILE = "seg.dcm"


def write_dicom_seg(labels: Volume, folder: str | os.PathLike, like: Volume,
                    names: Mapping[int, str] | None = None, description: str = "",
                    derivation: str = "") -> Path:
    """Write the label map ``labels`` ``(1, I, J, K)`` (whole numbers, 0 = background) as a
    DICOM-SEG file ``folder/seg.dcm`` referring to the DICOM series ``like`` was read from,
    atomically (the folder appears whole or not at all). ``names`` maps each label value to
    its segment name (default: ``label N``); a value in the map without a name is an
    ``OutputError``, as is a ``like`` that was not read from DICOM. ``description`` becomes
    SeriesDescription, ``derivation`` ContentDescription. Returns ``folder``."""
    import highdicom as hd  # imported here: only this writer needs it
    from pydicom.sr.codedict import codes

    folder = Path(folder)
    files = source_files(like)
    if not files:
        raise OutputError(f"{folder}: a DICOM-SEG refers to the DICOM series it segments, and "
                          f"{like.source or 'the input'} is not DICOM; write the labels as "
                          "NIfTI, NRRD or MHA instead")
    numbers, names = _segment_numbers(labels, names, folder)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    affine = np.diag([*np.diag(LPS_TO_RAS), 1.0]) @ labels.affine  # LPS
    # highdicom stacks frames along the first axis: (K, J, I) = (slice, row, column)
    volume = hd.Volume(numbers.transpose(2, 1, 0), affine[:, [2, 1, 0, 3]], "PATIENT",
                       frame_of_reference_uid=sources[0].get("FrameOfReferenceUID"))
    algorithm = hd.AlgorithmIdentificationSequence(
        name="revmed", version=software_version(), family=codes.cid7162.ArtificialIntelligence)
    segments = [hd.seg.SegmentDescription(
        n + 1, name, *(getattr(codes.SCT, c) for c in SEGMENT_CODES.get(name, ("Tissue",) * 2)),
        "AUTOMATIC", algorithm_identification=algorithm) for n, name in enumerate(names.values())]
    number = sources[0].get("SeriesNumber")
    seg = hd.seg.Segmentation(
        sources, volume, "BINARY", segments, generate_uid(),
        derived_number(number, 2000), generate_uid(), 1, "revmed",
        "revmed", software_version(), "0", omit_empty_frames=False,
        series_description=(description or "revmed segmentation")[:64],
        content_description=derivation[:64] or None)
    # the label map's own slice spacing, not what the source's headers may claim
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    measures.SpacingBetweenSlices = format_number_as_ds(float(spacing_of(labels.affine)[2]))
    with atomic_folder(folder) as tmp:
        save_dataset(seg, tmp / SEG_FILE)
    return folder


def _segment_numbers(labels: Volume, names: Mapping[int, str] | None,
                     folder: Path) -> tuple[np.ndarray, dict[int, str]]:
    """``(numbers, names)``: the ``(I, J, K)`` uint8 segment numbers (1, 2, ... in the order
    of the label values; 0 background) and the name of each label value."""
    if labels.channels != 1:
        raise OutputError(f"{folder}: a label map has one channel; got {labels.channels}")
    array = labels.array[0]
    values = np.unique(array)
    if not np.array_equal(values, np.rint(values)):
        raise OutputError(f"{folder}: a DICOM-SEG stores whole label values; the map holds "
                          "fractions")
    present = [int(v) for v in values if v != 0]
    names = dict(sorted((names or {v: f"label {v}" for v in present}).items()))
    if any(v <= 0 for v in names):
        raise OutputError(f"{folder}: segment label values must be positive, got "
                          f"{sorted(names)}")
    unnamed = [v for v in present if v not in names]
    if unnamed:
        raise OutputError(f"{folder}: label value(s) {unnamed} have no segment name (named: "
                          f"{', '.join(f'{v} {n}' for v, n in names.items())})")
    if len(names) > 255:
        raise OutputError(f"{folder}: {len(names)} segments; a DICOM-SEG written by revmed "
                          "holds at most 255")
    lookup = np.zeros(int(max([*names, 0])) + 1, dtype=np.uint8)
    for n, value in enumerate(names):
        lookup[value] = n + 1
    return lookup[np.rint(array).astype(np.int64)], names


def read_dicom_seg(path: str | os.PathLike, where: str | None = None) -> Volume:
    """The DICOM-SEG file ``path`` as a label map ``(1, I, J, K)``: segment numbers as float32
    values, the geometry of its frames (RAS+), ``meta["units"] == "label"`` and
    ``meta["label_names"]`` (segment number -> label). ``InputError`` (naming ``where``, by
    default the file) when highdicom cannot read it or its segments overlap."""
    import highdicom as hd  # imported here: only the DICOM-SEG paths need it

    from revmed.errors import InputError
    from revmed.io.messages import exception_reason, quiet_libraries

    where = where or str(path)
    try:
        with quiet_libraries():
            seg = hd.seg.segread(path)
            volume = seg.get_volume(combine_segments=True, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001  highdicom raises many types on what it refuses
        raise InputError(f"{where}: cannot read it as a DICOM segmentation "
                         f"({exception_reason(exc)})") from None
    lps = np.asarray(volume.affine, dtype=np.float64)[:, [2, 1, 0, 3]]  # (K, J, I) -> (I, J, K)
    affine = np.diag([*np.diag(LPS_TO_RAS), 1.0]) @ lps
    array = np.ascontiguousarray(np.asarray(volume.array).transpose(2, 1, 0))[None]
    names = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    return Volume(array.astype(np.float32), affine, source=str(path),
                  meta={"format": "dicom-seg", "units": "label", "label_names": names,
                        "segments": ", ".join(f"{n} {name}" for n, name in names.items()),
                        "series_uid": str(seg.SeriesInstanceUID), "modality": "SEG"})

