"""Tune's experiments on disk -- the one module that knows them: their folders and names (the
first, each extension that grew the study, the confirmation), the trials each holds (config,
status, folder, error file), a trial's epoch records (``result.json``), whether one is left to
run. The repairs a killed driver's folder needs read trials through it (their one door:
``study._resume.repair``, called once per experiment by the command that opens it).

Everything here reads the JSON Tune writes, never its pickles.

Tune's own reader (``tune.ExperimentAnalysis``) unpickles the ``CLOUDPICKLE_FALLBACK`` entries
of ``experiment_state-*.json``: code a copied or downloaded folder could carry. Reading results,
syncing MLflow and confirming need none of it: each trial entry is a JSON text with the trial
id, config, status and folder, and its run metadata (a second JSON text) names the error file.
Only ``--resume`` lets Tune unpickle a folder's state (``Tuner.restore``; docs/reliability.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from trainables.fileio import read_regular_bytes
from trainables.records import CONFIRM_PHASE, OPTIONAL_RECORD_KEYS, RECORD_KEYS

if TYPE_CHECKING:
    from trainables.studyfolder import StudyPaths

__all__ = ["TrialState", "read_trials", "unfinished", "saved", "read_results", "RESULTS_FILE",
           "first_dir", "more_dirs", "search_dirs", "next_more_dir", "confirm_dir",
           "experiment_dirs", "study_trials", "discard_unsaved", "trial_error_text"]

_DONE = ("TERMINATED", "ERROR")
RESULTS_FILE = "result.json"  # the trial's reported results (Tune's JSON logger's file)
_REQUIRED = tuple(k for k in RECORD_KEYS if k not in OPTIONAL_RECORD_KEYS)
MAX_RESULTS_BYTES = 1 << 30  # a trial's result.json: ~3 KB an epoch


def read_results(trial_dir: Path) -> list[dict[str, Any]]:
    """A trial's epoch records from Tune's ``result.json``; an epoch re-reported after a resume
    appears once (the last report wins -- on the CPU it is identical)."""
    path = Path(trial_dir) / RESULTS_FILE
    by_epoch: dict[int, dict[str, Any]] = {}
    if path.exists() or path.is_symlink():
        # a regular file only (a FIFO would block the driver); torn bytes are skipped below
        text = read_regular_bytes(path, MAX_RESULTS_BYTES).decode("utf-8", "replace")
        for line in text.splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if isinstance(r, dict) and "epoch" in r and all(k in r for k in _REQUIRED):
                by_epoch[int(r["epoch"])] = r
    return [by_epoch[e] for e in sorted(by_epoch)]



# ---- the experiments of a study, by name -------------------------------------------------
def first_dir(paths: StudyPaths, name: str) -> Path:
    """The study's first experiment (``ray/<name>``)."""
    return (paths.ray / name).resolve()


def more_dirs(paths: StudyPaths, name: str) -> list[Path]:
    """Each extension that grew the study (``ray/<name>-more<k>``), in order."""
    return sorted((p.resolve() for p in paths.ray.glob(f"{name}-more*")),
                  key=lambda p: int(p.name.rpartition("more")[2] or 0))


def next_more_dir(paths: StudyPaths, name: str) -> Path:
    """Where the next extension goes."""
    return (paths.ray / f"{name}-more{len(more_dirs(paths, name)) + 1}").resolve()


def confirm_dir(paths: StudyPaths, name: str) -> Path:
    """The confirmation phase's experiment (``ray/<name>-confirm``)."""
    return (paths.ray / f"{name}-{CONFIRM_PHASE}").resolve()


def search_dirs(paths: StudyPaths, exp_dir: Path) -> list[Path]:
    """The search experiments of the study that ``exp_dir`` (the first or an extension)
    belongs to: the first, then each extension in order."""
    name = exp_dir.name.rpartition("-more")[0] if "-more" in exp_dir.name else exp_dir.name
    return [first_dir(paths, name), *more_dirs(paths, name)]


def experiment_dirs(paths: StudyPaths, name: str) -> list[Path]:
    """The study's experiments: the first, each extension in order, the confirmation (when it
    exists)."""
    confirm = confirm_dir(paths, name)
    return [first_dir(paths, name), *more_dirs(paths, name),
            *([confirm] if confirm.exists() else [])]


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


def study_trials(paths: StudyPaths, name: str) -> list[dict[str, Any]]:
    """Every trial of every experiment of the study: trial_id, config, path, error, status,
    error_file."""
    return [{"trial_id": t.trial_id, "config": t.config, "path": t.path, "error": t.error,
             "status": t.status, "error_file": t.error_file}
            for exp_dir in experiment_dirs(paths, name) for t in read_trials(exp_dir)]


def trial_error_text(trial: Any) -> str:
    """The last line of a failed trial's traceback (the reason), or a generic note; ``trial``
    is Tune's trial or the path of its error file."""
    path = trial if isinstance(trial, (str, Path)) else getattr(trial, "error_file", None) or ""
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        return lines[-1] if lines else "trial failed"
    except OSError:
        return "trial failed (no error file)"


# ---- before a command reads or restores them ---------------------------------------------
def discard_unsaved(exp_dir: Path) -> bool:
    """An experiment killed before Tune saved any state cannot be resumed: its folder is
    removed (it starts afresh; runs the killed attempt logged are removed by the sync).
    Returns whether Tune's saved state is there to restore."""
    if saved(exp_dir):
        return True
    if exp_dir.exists():
        shutil.rmtree(exp_dir)
    return False
