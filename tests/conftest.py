"""Run the CLI in-process, capturing stdout and stderr separately."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from revmed.cli.app import run


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli("presets", "--json")`` -> Result(code, stdout, stderr)."""

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke
