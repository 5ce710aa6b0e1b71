"""Tune's experiments on disk, read as data: which trials an experiment holds, their configs,
status, folders and error files -- from the JSON Tune writes, never from its pickles.

Tune's own reader (``tune.ExperimentAnalysis``) unpickles the ``CLOUDPICKLE_FALLBACK`` entries
of ``experiment_state-*.json``: code a copied or downloaded folder could carry. Reading results,
syncing MLflow and confirming need none of it: each trial entry is a JSON text with the trial
id, config, status and folder, and its run metadata (a second JSON text) names the error file.
Only ``--resume`` lets Tune unpickle a folder's state (``Tuner.restore``; docs/reliability.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["TrialState", "read_trials", "unfinished", "saved"]

_DONE = ("TERMINATED", "ERROR")


class TrialState(NamedTuple):
    trial_id: str
    config: dict[str, Any]
    path: Path  # the trial's folder (result.json, params.json, checkpoints)
    status: str  # Tune's: PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    error_file: Path | None  # the traceback of a failed trial

    @property
    def error(self) -> bool:
        return self.status == "ERROR"


def saved(exp_dir: Path) -> bool:
    """Whether Tune saved this experiment's state (it can be resumed and read)."""
    return any(exp_dir.glob("experiment_state-*.json"))


def _states(exp_dir: Path) -> list[dict[str, Any]]:
    """The experiment's saved states, newest first, that parse as JSON."""
    out = []
    for path in sorted(exp_dir.glob("experiment_state-*.json"), reverse=True):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # torn by a kill (study._resume sets it aside on --resume)
        if isinstance(state, dict) and isinstance(state.get("trial_data"), list):
            out.append(state)
    return out


def _plain(value: Any) -> bool:
    """A JSON value that is no pickle in disguise."""
    return not (isinstance(value, dict) and "_type" in value)


def _trial(exp_dir: Path, entry: Any) -> TrialState | None:
    try:
        info = json.loads(entry[0])
        meta = json.loads(entry[1]) if len(entry) > 1 and isinstance(entry[1], str) else {}
    except (TypeError, IndexError, KeyError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict):
        return None
    config = info.get("config", info.get("_Trial__unresolved_config"))
    tid, status, rel = info.get("trial_id"), info.get("status"), info.get("relative_logdir")
    if not (isinstance(tid, str) and isinstance(status, str) and isinstance(rel, str)
            and isinstance(config, dict) and _plain(config)) or "/" in rel or rel in ("", ".."):
        return None
    path = exp_dir / rel
    err = meta.get("error_filename") if isinstance(meta, dict) else None
    error_file = path / Path(err).name if isinstance(err, str) and err else None
    return TrialState(tid, config, path, status, error_file)


def read_trials(exp_dir: Path) -> list[TrialState]:
    """Every trial of the experiment's newest readable state, in Tune's order (empty when
    nothing was saved)."""
    states = _states(exp_dir)
    if not states:
        return []
    return [t for e in states[0]["trial_data"] if (t := _trial(exp_dir, e)) is not None]


def unfinished(exp_dir: Path) -> bool:
    """Whether the experiment has trials left (or was never saved: then it starts over)."""
    if not saved(exp_dir):
        return True
    trials = read_trials(exp_dir)
    return not trials or any(t.status not in _DONE for t in trials)
