"""Errors a user can cause.

Every error that bad input, a bad preset or a bad checkpoint can trigger is a ``RevmedError``
whose message names the file (or key, or argument) and what is wrong with it. The CLI prints
such errors as one red line and exits with code 2; anything else is a bug and keeps its
traceback (exit 1).

The library describes the problem in its own terms; the command line adds how to fix it with
its flags. Two optional fields carry what the CLI needs for that:

* ``option``: the argument of the library call that the message starts with, e.g.
  ``"device"`` for ``"device cuda: no CUDA device is available here"``; the CLI shows it as the
  flag that set it (``--device cuda: ...``).
* ``fix``: the name of the argument that would resolve the problem (e.g. ``"overwrite"`` for
  an output that exists); the CLI appends what to type (``use --overwrite to replace it``).
"""

from __future__ import annotations


class RevmedError(Exception):
    """Base class of all user-caused errors (see the module doc for ``option`` and ``fix``)."""

    def __init__(self, message: str, *, option: str | None = None,
                 fix: str | None = None) -> None:
        super().__init__(message)
        self.option, self.fix = option, fix


class InputError(RevmedError):
    """A volume, folder or dataset given to revmed cannot be used as it is."""


class ConfigError(RevmedError):
    """A preset, preset file, ``--set`` override or argument value is invalid."""


class CheckpointError(RevmedError):
    """A checkpoint file is missing, corrupt, untrusted or of the wrong kind."""


class OutputError(RevmedError):
    """An output path cannot be written (exists, unwritable folder, ...)."""


class RevmedWarning(UserWarning):
    """Something in the input looks wrong but revmed can go on (e.g. a DICOM series with gaps)."""
