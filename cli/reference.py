"""Generate docs/cli.md from the Typer app, so the reference never drifts from the code.

Run ``python -m revmed.cli.reference > docs/cli.md``; a test fails when the committed file
differs from what this prints.
"""

from __future__ import annotations

import inspect

import typer

from revmed import config
from revmed.cli.app import app

HEADER = """# Command-line reference

Generated from the code by `python -m revmed.cli.reference > docs/cli.md`; a test keeps it in
step. Every command also answers `--help`.

Exit codes: **0** success; **2** bad input or usage (one red line on stderr naming the file and
the problem, no traceback, no partial output); **1** unexpected failure (a bug: the traceback is
printed); **130** interrupted.

Output: results on stdout (with `--json`, the JSON alone); progress bars, notes, warnings and
errors on stderr. `--quiet` silences progress bars and notes.

Presets: `--preset NAME` takes a shipped preset (`revmed presets` lists them) or a path to your
own TOML file. Your file may start from a shipped preset with `base = "chestct-sr"` and state
only what differs, e.g. a `[patch]` table with `size = [96, 96, 96]`. Unknown keys, wrong types
and impossible values are errors that name the key. `--set section.key=value` overrides one key
on the command line (the value is TOML: `--set patch.size=[64,64,64]`, `--set train.lr=1e-4`).
"""


def _param_line(param) -> str:
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`"
        kind = "argument, required" if param.required else "argument, optional"
    else:
        name = ", ".join(f"`{opt}`" for opt in param.opts)
        kind = "required" if param.required else ""
        default = param.default
        if not param.required and default not in (None, False, [], ()) and not getattr(
                param, "is_flag", False):
            kind = f"default: `{default}`"
    text = " ".join(str(getattr(param, "help", "") or "").split())
    return f"- {name}" + (f" ({kind})" if kind else "") + (f": {text}" if text else "")


def _help(text: str | None) -> list[str]:
    """A command's help as Markdown: its ``Example:`` line becomes inline code."""
    out = []
    for line in inspect.cleandoc(text or "").splitlines():
        if line.startswith("Example: "):
            line = f"Example: `{line[len('Example: '):]}`"
        out.append(line)
    return out


def render() -> str:
    group = typer.main.get_command(app)
    lines = [HEADER, "## `revmed`", "", *_help(group.help), "",
             "Options: `--version` (print the version and exit), `--help`.", ""]
    for name in sorted(group.commands):
        command = group.commands[name]
        lines += [f"## `revmed {name}`", "", *_help(command.help), ""]
        params = [p for p in command.params if p.name != "help"]
        if params:
            lines += [_param_line(p) for p in params] + [""]
    lines += ["## Preset keys", "",
              "Every key a preset file or `--set` may give, with its type and default.", "",
              "| key | type | default | meaning |", "|---|---|---|---|"]
    for dotted, key in _schema_keys():
        kind = getattr(key.check, "describe", "")
        lines.append(f"| `{dotted}` | {kind} | `{config.toml_value(key.default)}` | "
                     f"{key.help} |")
    return "\n".join(lines).rstrip() + "\n"


def _schema_keys():
    for name, spec in config.schema().items():
        if isinstance(spec, dict):
            for key, value in spec.items():
                yield f"{name}.{key}", value
        else:
            yield name, spec


if __name__ == "__main__":
    print(render(), end="")
