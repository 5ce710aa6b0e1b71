"""The errors a user fixes (no usable data) or a trial ends with (it diverged), defined apart
from the torch modules that raise them: a command that only reports one (exit 2, one line)
never imports torch to recognize it."""

from __future__ import annotations

__all__ = ["DataError", "TrialDiverged"]


class DataError(RuntimeError):
    """No usable data source (or a corrupt file); the message says how to get the data."""


class TrialDiverged(FloatingPointError):
    """A non-finite loss or metric, or a failed eigensolve: the trial ends as failed."""
