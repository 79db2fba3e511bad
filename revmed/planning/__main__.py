"""``python -m revmed.planning``: one CPU measurement in a fresh process (``measure_step``
starts it). The request is JSON on stdin (``preset``: the preset's dict, ``patch``, ``batch``
and ``labels``: a label set's dict, or null); the ``Measurement`` is the last line of stdout,
as JSON.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import torch

from revmed.config import preset_from_dict
from revmed.planning.measure import measure_here
from revmed.regions import LabelSet


def main() -> None:
    """Read the request from stdin, measure on one CPU thread, print the measurement."""
    request = json.loads(sys.stdin.read())
    torch.set_num_threads(1)
    preset = preset_from_dict(request["preset"], "the planner's request")
    labels = LabelSet.from_dict(request["labels"]) if request.get("labels") else None
    result = measure_here(preset, request["patch"], request["batch"], torch.device("cpu"),
                          labels)
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
