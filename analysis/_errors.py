"""The analysis package's error and its loaded-study type (no dependencies of their own)."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

__all__ = ["AnalysisError", "StudyData"]


class AnalysisError(RuntimeError):
    """A problem for the user (exit code 2)."""


class StudyData(NamedTuple):
    experiment_id: str
    experiment: str
    tracking_uri: str
    runs: pd.DataFrame  # one row per trial run: run_id, trial_id, baseline, config columns...
    history: pd.DataFrame  # run_id, epoch, one column per record key
    parent_run_id: str | None
