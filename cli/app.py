"""The process entry point: every command registered on the Typer app, and exit codes.

Exit codes: 0 success; 2 bad input or usage (one red line naming the file and the problem);
1 unexpected failure (a bug: the traceback is kept); 130 interrupted.
"""

from __future__ import annotations

import errno
import sys

# Each module registers its commands on `app`; `revmed --help` lists them in this order, the
# order of the work: data, training, inference, evaluation, planning, the demo, the presets.
from revmed.cli import data_commands  # noqa: F401, I001
from revmed.cli import train_command  # noqa: F401
from revmed.cli import infer_command  # noqa: F401
from revmed.cli import selfsr_command  # noqa: F401
from revmed.cli import eval_command  # noqa: F401
from revmed.cli import plan_command  # noqa: F401
from revmed.cli import demo_command  # noqa: F401
from revmed.cli import preset_commands  # noqa: F401
from revmed.cli import output
from revmed.cli.root import app
from revmed.errors import RevmedError

__all__ = ["app", "main", "run"]


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Typer itself reports usage errors (exit 2) and interruptions (exit 130); user errors raised
    by the library as ``RevmedError`` become one red line and exit code 2. Any other exception
    propagates with its traceback (exit 1).
    """
    output.COMMAND_LINE[:] = list(sys.argv[1:] if argv is None else argv)
    try:
        with output.warnings_as_lines():
            app(args=argv, prog_name="revmed")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RevmedError as exc:
        output.error(output.describe(exc))
        return 2
    except MemoryError as exc:
        # the last line of defence: readers and inference estimate their needs beforehand
        detail = str(exc) or "an allocation failed"
        output.error(f"out of memory: {detail}; this process may not use that much more "
                     "(see `ulimit -v`, the job's memory limit, or the machine's free memory)")
        return 2
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
            raise
        output.error(f"out of memory: {str(exc).strip().splitlines()[-1][:300]}; this process "
                     "may not use that much more (see `ulimit -v`, the job's memory limit, or "
                     "the machine's free memory)")
        return 2
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        output.error(f"{where}{exc.strerror or exc}")
        return 2
    return 0


#: Operating-system errors of the user's files and disks, never of revmed's code: the last
#: line of defence turns any that a check did not catch earlier into one line and exit 2.
ENVIRONMENT_ERRORS = frozenset(getattr(errno, name) for name in (
    "ENAMETOOLONG", "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ELOOP", "EFBIG")
    if hasattr(errno, name))


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
