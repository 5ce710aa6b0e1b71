"""Repairs a resumed Tune experiment needs before Tune reads it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["restore_deleted_checkpoints"]


def _checkpoint_index(path: Path) -> int:
    tail = path.name.rpartition("_")[2]
    return int(tail) if tail.isdigit() else -1


def _named_checkpoints(exp_dir: Path) -> list[tuple[str, Path]]:
    """(trial id, checkpoint folder) that the newest saved experiment state will restore, for
    the trials it will resume. Empty when the state cannot be read (nothing to repair)."""
    states = sorted(exp_dir.glob("experiment_state-*.json"))  # Tune restores the newest
    try:
        entries = json.loads(states[-1].read_text())["trial_data"]
    except (IndexError, OSError, ValueError, KeyError):
        return []
    named = []
    for entry in entries:
        try:
            trial, meta = json.loads(entry[0]), json.loads(entry[1])
            name = (meta.get("last_result") or {}).get("checkpoint_dir_name")
            if name and trial["status"] != "TERMINATED":
                named.append((trial["trial_id"], exp_dir / trial["relative_logdir"] / name))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return named


def restore_deleted_checkpoints(exp_dir: Path) -> list[str]:
    """Put back the checkpoints a resumed experiment names but Tune already deleted.

    Tune deletes a trial's oldest checkpoint (``num_to_keep``) when it registers a newer one,
    and writes the state that names the newer one only later; a driver killed in between
    leaves a state naming a missing folder, and Tune then fails the trial ("does not exist on
    storage anymore"). Every later checkpoint that survives was registered, so its epochs are
    in the trial's results: the earliest of them is copied under the missing name, the trial
    restarts from it, and the epochs after it are trained again (bit for bit on the CPU) and
    recorded once by epoch. Returns one line per repaired trial."""
    from trainables.checkpoint import STATE_FILE

    notes = []
    for trial_id, missing in _named_checkpoints(exp_dir):
        if missing.exists():
            continue
        later = sorted((c for c in missing.parent.glob("checkpoint_*")
                        if _checkpoint_index(c) > _checkpoint_index(missing)
                        and (c / STATE_FILE).is_file()), key=_checkpoint_index)
        if not later:
            continue  # nothing to restart from; Tune reports the trial failed
        shutil.copytree(later[0], missing)
        notes.append(f"resume: trial {trial_id}'s saved state names {missing.name}, which Tune "
                     f"had deleted; restarting it from {later[0].name}")
    return notes
