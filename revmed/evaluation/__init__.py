"""Evaluating predicted volumes against references: the library behind ``revmed eval``.

Three steps, one module each: ``cases`` pairs prediction, reference, mask and low-resolution
input files by case name; ``scoring`` reads each case, checks that its volumes fit together and
computes the metrics of ``revmed.metrics`` (with interpolation baselines, or per BraTS region),
keeping the PNG previews of ``preview`` in memory; ``reports`` writes the JSON, CSV and PNG
files once every case is done, so a bad case leaves no partial output.
"""

from revmed.evaluation.cases import CaseFiles, match_cases
from revmed.evaluation.reports import check_outputs, write_outputs
from revmed.evaluation.scoring import (BASELINES, METRICS, CaseResult, Report, evaluate,
                                       evaluate_case, evaluate_regions)

__all__ = ["BASELINES", "METRICS", "CaseFiles", "CaseResult", "Report", "check_outputs",
           "evaluate", "evaluate_case", "evaluate_regions", "match_cases", "write_outputs"]
