"""docs/api.md's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {"__name__": "api_example"})  # noqa: S102
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "0.0002 (2, 2, 4)"
    assert printed[1].startswith("1 ")
    assert printed[2] == "Translator (-1150.0, 350.0)"
    assert float(printed[3]) > 15.0  # a PSNR in dB, on the 1500 HU range
    assert (tmp_path / "api-example" / "sr.nii.gz").is_file()
