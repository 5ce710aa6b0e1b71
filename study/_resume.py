"""Repairs a resumed Tune experiment needs before Tune reads it.

Tune keeps a trial's results (``result.json``) and the searcher's state on the driver and copies
them into the study folder after the fact, with the experiment state, in one background copy;
the workers upload each checkpoint themselves before its result reaches the driver. A driver
killed mid-copy can leave a state (or a checkpoint it names) ahead of the results beside it:
the trial then resumes after epochs nobody recorded. The checkpoints are the truth of what a
trial trained (each holds every epoch's record so far), so the records are brought up to them
here, once, before Tune (or ``mistudy sync``) reads the folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from trainables.records import BASELINE_KEY, atomic_write_text

__all__ = ["prepare_resume", "restore_deleted_checkpoints", "recover_records"]

RESULTS_FILE = "result.json"
PARAMS_FILE = "params.json"  # the trial's config, as Tune's JSON logger saves it
# What a recovered epoch takes from the trial's last reported result: where and how it ran.
_CARRIED = ("trial_id", "data_source", "threads", "device", "node_id", "cuda_visible_devices",
            BASELINE_KEY)


class SavedTrial(NamedTuple):
    trial_id: str
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    folder: Path
    named: Path | None  # the checkpoint the state restores the trial from


def prepare_resume(exp_dir: Path) -> list[str]:
    """Every repair, in order; one line per repaired trial."""
    return restore_deleted_checkpoints(exp_dir) + recover_records(exp_dir)


def _checkpoint_index(path: Path) -> int:
    tail = path.name.rpartition("_")[2]
    return int(tail) if tail.isdigit() else -1


def _saved_trials(exp_dir: Path) -> list[SavedTrial]:
    """The trials of the newest saved experiment state (the one Tune restores); empty when it
    cannot be read (nothing to repair)."""
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    try:
        entries = json.loads(states[-1].read_text())["trial_data"]
    except (IndexError, OSError, ValueError, KeyError):
        return []
    saved = []
    for entry in entries:
        try:
            trial, meta = json.loads(entry[0]), json.loads(entry[1])
            folder = exp_dir / trial["relative_logdir"]
            name = (meta.get("last_result") or {}).get("checkpoint_dir_name")
            saved.append(SavedTrial(trial["trial_id"], trial["status"], folder,
                                    folder / name if name else None))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return saved


def restore_deleted_checkpoints(exp_dir: Path) -> list[str]:
    """Put back the checkpoints a resumed experiment names but Tune already deleted.

    Tune deletes a trial's oldest checkpoint (``num_to_keep``) when it registers a newer one,
    and writes the state that names the newer one only later; a driver killed in between
    leaves a state naming a missing folder, and Tune then fails the trial ("does not exist on
    storage anymore"). The earliest later checkpoint is copied under the missing name and the
    trial restarts from it; :func:`recover_records` then records any epoch it holds that the
    results lack, and the epochs after it are trained again (bit for bit on the CPU) and
    recorded once by epoch."""
    from trainables.checkpoint import STATE_FILE

    notes = []
    for t in _saved_trials(exp_dir):
        missing = t.named
        if t.status == "TERMINATED" or missing is None or missing.exists():
            continue
        later = sorted((c for c in missing.parent.glob("checkpoint_*")
                        if _checkpoint_index(c) > _checkpoint_index(missing)
                        and (c / STATE_FILE).is_file()), key=_checkpoint_index)
        if not later:
            continue  # nothing to restart from; Tune reports the trial failed
        shutil.copytree(later[0], missing)
        notes.append(f"resume: trial {t.trial_id}'s saved state names {missing.name}, which "
                     f"Tune had deleted; restarting it from {later[0].name}")
    return notes


def _trained(t: SavedTrial) -> tuple[Path, list[dict[str, Any]]] | None:
    """The checkpoint whose epochs Tune will not report again, and its history: a finished
    trial's newest (the longest history), a resumed trial's named one."""
    from trainables.checkpoint import read_history

    folders = list(t.folder.glob("checkpoint_*")) if t.status == "TERMINATED" else \
        [t.named] if t.named is not None else []
    best: tuple[Path, list[dict[str, Any]]] | None = None
    for folder in folders:
        history = read_history(folder)
        if history and (best is None or len(history) > len(best[1])):
            best = (folder, history)
    return best


def _append_results(t: SavedTrial, checkpoint: Path, history: list[dict[str, Any]]) -> list[int]:
    """Add to the trial's ``result.json`` every epoch ``history`` holds and it lacks (whole
    file replaced atomically); returns those epochs."""
    from trainables.checkpoint import HISTORY_FILE

    from ._tracking import read_trial_results

    reported = read_trial_results(t.folder)
    have = {int(r["epoch"]) for r in reported}
    missing = [r for r in history if int(r["epoch"]) not in have]
    if not missing:
        return []
    path = t.folder / RESULTS_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"  # a line torn by the kill stays torn (readers skip it), never merged
    carried = _carried(t.folder, reported[-1] if reported else {})
    when = (checkpoint / HISTORY_FILE).stat().st_mtime
    lines = [json.dumps({**r, **carried, "trial_id": t.trial_id, "timestamp": when,
                         "epochs_done": int(r["epoch"]) + 1,
                         "recovered_from": checkpoint.name}) + "\n" for r in missing]
    atomic_write_text(path, text + "".join(lines))
    return [int(r["epoch"]) for r in missing]


def _carried(folder: Path, last: dict[str, Any]) -> dict[str, Any]:
    """What a recovered epoch takes from its trial: the config Tune saved beside the results
    (as every reported line has it), and from the last reported line where and how it ran."""
    carried = {k: last[k] for k in _CARRIED if k in last}
    try:
        config = json.loads((folder / PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return carried
    return {"config": config, BASELINE_KEY: int(bool(config.get(BASELINE_KEY))), **carried}


def recover_records(exp_dir: Path) -> list[str]:
    """Bring the experiment's records up to its trials' checkpoints: each trial's
    ``result.json`` (what the MLflow finish and ``mistudy sync`` log) and the searcher's saved
    histories (what it tells Optuna), including a completion the searcher's state missed."""
    notes: list[str] = []
    records: dict[str, list[dict[str, Any]]] = {}
    finished: set[str] = set()
    from ._tracking import read_trial_results

    for t in _saved_trials(exp_dir):
        found = _trained(t)
        if found is not None:
            epochs = _append_results(t, *found)
            if epochs:
                notes.append(f"resume: trial {t.trial_id}'s results lacked epoch(s) "
                             f"{', '.join(map(str, epochs))}, which its {found[0].name} holds "
                             "(the driver was killed before Tune copied them); recorded from it")
        records[t.trial_id] = read_trial_results(t.folder)
        if t.status == "TERMINATED":
            finished.add(t.trial_id)
    return notes + _recover_searcher(exp_dir, records, finished)


def _recover_searcher(exp_dir: Path, records: dict[str, list[dict[str, Any]]],
                      finished: set[str]) -> list[str]:
    """The same for the study searcher's state file Tune restores (the newest by name)."""
    from ._searcher import StudySearcher

    states = sorted(exp_dir.glob(StudySearcher.CKPT_FILE_TMPL.format("*")))
    if not states:
        return []
    searcher = StudySearcher.from_state_file(states[-1])
    if searcher is None:
        return []  # another searcher (a confirmation's list), or a state from before JSON
    added, completed = searcher.recover(records, finished)
    if not (added or completed):
        return []
    searcher.save(str(states[-1]))
    return [f"resume: the searcher's saved state lacked {added} epoch record(s) and "
            f"{len(completed)} finished trial(s); recovered from the trials' records"]
