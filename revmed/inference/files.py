"""``revmed infer`` as one call: files in, predictions written, a batch that goes on past a
failed case.

``infer_files`` plans the outputs and checks them before a model is loaded
(``revmed.io.targets``), picks this run's targets (``revmed.io.batch``: parts of a batch,
``skip_existing``), claims a single output, loads the predictor, checks what the outputs need
of it, and predicts and writes each case (``revmed.inference.outputs``). What it says as it
goes reaches ``events`` (``revmed.io.batch.Events``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from revmed.inference.loading import find_checkpoint, load_predictor
from revmed.inference.outputs import (check_model_outputs, check_output_options, predict_case,
                                      write_prediction)
from revmed.inference.predictor import Predictor
from revmed.io.batch import Events, check_batch_options, run_targets, select_targets, single_claim
from revmed.io.channels import match_channel_files
from revmed.io.targets import Target, plan_targets


def infer_files(inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
                model: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                reverse: bool = False, overlap: float | None = None,
                precision: str | None = None, tiling: str = "auto",
                compile: bool | None = None,  # noqa: A002
                channels_last: bool | None = None, series: str | None = None,
                dicom_geometry: str = "resample", fmt: str | None = None,
                dtype: str = "float32", overwrite: bool = False, skip_existing: bool = False,
                num_parts: int = 1, part_id: int = 0, events: Events = Events()) -> None:
    """Predict ``inputs`` (a volume, several channel files of one case, a folder of cases or
    a DICOM tree) with the checkpoint ``model`` (``find_checkpoint``) into ``output`` (a file,
    or a folder for a batch or ``fmt="dicom"``).

    ``reverse``, ``overlap``, ``precision`` and ``tiling`` go to ``Predictor.predict``;
    ``device``, ``compile`` and ``channels_last`` to ``load_predictor``; ``series`` and
    ``dicom_geometry`` to the DICOM reader; ``dtype`` to ``write_prediction``. A batch's
    failed cases are counted in one ``InputError`` after the others are done.
    """
    check_output_options(dtype, precision)
    check_batch_options(overwrite, skip_existing, num_parts, part_id)
    plan = plan_targets(inputs, output, fmt, series)
    targets = select_targets(plan, num_parts, part_id, overwrite, skip_existing, events.note)
    with single_claim(plan, targets, overwrite, skip_existing):
        checkpoint = find_checkpoint(model)
        predictor = load_predictor(checkpoint, device, compile=compile,
                                   channels_last=channels_last)
        check_model_outputs(predictor, plan.format, targets, reverse, dtype)
        events.note(f"model: {checkpoint}")
        if len(inputs) > 1:
            events.note(_channels_note(inputs, list(predictor.card.data.channels)))
        options = {"reverse": reverse, "overlap": overlap, "precision": precision,
                   "tiling": tiling}

        def one(target: Target) -> None:
            _infer_one(predictor, target, plan.format, checkpoint.name, options, dtype,
                       dicom_geometry, events)

        run_targets(targets, plan, Path(output), overwrite, one, skip_existing, events=events)


def _infer_one(predictor: Predictor, target: Target, fmt: str, model_name: str, options: dict,
               dtype: str, dicom_geometry: str, events: Events) -> None:
    """Read one case, predict it and write its target atomically."""
    with events.progress(f"infer {target.name}", None) as update:
        volume, result = predict_case(predictor, target, options, dicom_geometry,
                                      progress=lambda done, total: update(done, total))
    write_prediction(predictor, result, volume, target.path, fmt, model_name, dtype,
                     note=events.note)
    events.wrote(target.path)


def _channels_note(inputs: Sequence[str | os.PathLike], channels: list[str]) -> str:
    """What several input files are taken as: one case's channels, and in which order."""
    ordered = match_channel_files([Path(p) for p in inputs], channels)
    how = (f"ordered as the model's channels ({', '.join(channels)})" if ordered else
           "in the order given (their names do not match the model's channels"
           f"{': ' + ', '.join(channels) if channels else ''})")
    return (f"{len(inputs)} INPUT files are taken as the channels of one case, {how}; to run "
            "each file as a case of its own, put them in a folder and give the folder")
