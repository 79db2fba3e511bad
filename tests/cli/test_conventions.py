"""CLI conventions every command follows: help with an example, version, exit codes, JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import revmed
from revmed.cli.app import app
from revmed.cli.reference import render

COMMANDS = sorted(typer.main.get_command(app).commands)
REPO = Path(__file__).resolve().parents[2]


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"revmed {revmed.__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(cli, command):
    result = cli(command, "--help")
    assert result.code == 0
    assert "Example: revmed " + command in " ".join(result.out.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_like_a_command_line_tool(command):
    """Paragraphs wrapped to the terminal, no line longer than it, click's metavars (no Python
    types such as <bool> or <list[Path]>, no braces around required arguments)."""
    result = subprocess.run(["revmed", command, "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert not re.search(r"<(bool|str|path|int|float|list)[^>]*>|\{[A-Z]", result.stdout)
    assert lines[0].startswith(f"Usage: revmed {command} [OPTIONS]")


def test_shell_completion_can_be_installed(cli):
    assert "--install-completion" in cli("--help").out


def test_usage_error_exits_2(cli):
    assert cli("presets", "--no-such-option").code == 2
    assert cli("no-such-command").code == 2


def test_user_error_is_one_red_line_with_exit_2(cli):
    result = cli("presets", "no-such-preset")
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no-such-preset" in lines[0]
    assert "Traceback" not in result.err


def test_bad_preset_file_names_the_key(cli, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[train]\nepochs = 'many'\n")
    result = cli("presets", str(path))
    assert result.code == 2 and "train.epochs" in result.err and str(path) in result.err


def test_presets_json_is_alone_on_stdout(cli):
    listing = json.loads(cli("presets", "--json").out)
    assert {row["name"] for row in listing} >= {"chestct-sr", "hcp-sr", "brats-seg"}
    one = cli("presets", "chestct-sr", "--set", "train.lr=1e-3", "--json")
    assert one.code == 0 and json.loads(one.out)["train"]["lr"] == 1e-3


def test_presets_prints_resolved_toml(cli, tmp_path):
    result = cli("presets", "demo-sr")
    assert result.code == 0 and "[patch]" in result.out and "size = [32, 32, 32]" in result.out
    path = tmp_path / "resolved.toml"
    path.write_text(result.out)
    assert cli("presets", str(path), "--json").code == 0  # the printout is a valid preset


def test_console_script_and_python_m_exit_codes(tmp_path):
    """The installed entry points, in real processes: exit codes survive the process boundary.

    They run outside the checkout, where `python -m` would import the source folder.
    """
    ok = subprocess.run(["revmed", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("revmed ")
    bad = subprocess.run([sys.executable, "-m", "revmed", "presets", "nope"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_reference_is_in_step_with_the_code():
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == render(), "regenerate: python -m revmed.cli.reference > docs/cli.md"


def test_presets_show_the_iunet_layout_as_comments(cli, tmp_path):
    result = cli("presets", "brats-seg")
    assert result.code == 0
    assert "# scales: 32@160x192x128 -> 64@80x96x64 -> 128@40x48x32" in result.out
    path = tmp_path / "resolved.toml"
    path.write_text(result.out)
    assert cli("presets", str(path), "--json").code == 0  # still a valid preset file
