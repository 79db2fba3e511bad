"""Errors a user can cause.

Every error that bad input, a bad preset or a bad checkpoint can trigger is a ``RevmedError``
whose message names the file (or key) and what is wrong with it. The CLI prints such errors as
one red line and exits with code 2; anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations


class RevmedError(Exception):
    """Base class of all user-caused errors."""


class InputError(RevmedError):
    """A volume, folder or dataset given to revmed cannot be used as it is."""


class ConfigError(RevmedError):
    """A preset, preset file or ``--set`` override is invalid."""


class CheckpointError(RevmedError):
    """A checkpoint file is missing, corrupt, untrusted or of the wrong kind."""


class OutputError(RevmedError):
    """An output path cannot be written (exists, unwritable folder, ...)."""


class RevmedWarning(UserWarning):
    """Something in the input looks wrong but revmed can go on (e.g. a DICOM series with gaps)."""
