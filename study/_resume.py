"""A trial folder's files (``result.json``, ``params.json``, checkpoints) and the repairs a
resumed Tune experiment needs before Tune reads it: a saved state torn by a kill, a checkpoint
the state names but Tune deleted, records that trail the checkpoints. The steps of
:func:`study._experiments.repair`, the one door through which commands call them.

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
import os
import pickletools
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from trainables.fileio import atomic_write_bytes, atomic_write_text
from trainables.records import BASELINE_KEY

from ._experiments import RESULTS_FILE, read_results, read_trials

__all__ = ["repair", "prepare_resume", "repair_torn_state", "set_aside_unsaved_trials",
           "restore_deleted_checkpoints", "recover_records", "driver_copy",
           "keep_tuner_copy", "repair_tuner_file"]

PARAMS_FILE = "params.json"  # the trial's config, as Tune's JSON logger saves it
# What a recovered epoch takes from the trial's last reported result: where and how it ran.
_CARRIED = ("data_source", "threads", "device", "node_id", "cuda_visible_devices", BASELINE_KEY)


class SavedTrial(NamedTuple):
    trial_id: str
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    folder: Path
    named: Path | None  # the checkpoint of the trial's last result in the state
    # every checkpoint the state's checkpoint manager holds: Tune restores the trial from its
    # latest, which a state saved between a result and its checkpoint's registration leaves
    # one behind ``named`` (seen: named checkpoint_000001, restored from checkpoint_000000)
    kept: tuple[Path, ...] = ()



def prepare_resume(exp_dir: Path, where: Any = None) -> list[str]:
    """Every repair, in order, on one reading of the saved state; one line per repair
    (``where``: the study's ``study._folder.Location``, for the searcher's stores)."""
    trials = _saved_trials(exp_dir)
    return restore_deleted_checkpoints(exp_dir, trials) + recover_records(exp_dir, trials,
                                                                          where)


# How a file is found torn: a kill mid-write, or a write that ran out of disk (either leaves
# the same cut-short file; a resume cannot tell which)
CUT = "cut short (a kill or a full disk)"
# The files of one driver session's saved state, named by the session (Tune restores the newest)
_SESSION_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl")


def repair_torn_state(exp_dir: Path) -> list[str]:
    """Make the newest saved state whole before anything reads it.

    Tune copies its state files into the study folder in place, not atomically: a driver killed
    mid-copy leaves one cut short, and Tune then cannot read the experiment at all (a JSON error,
    for every later resume). The driver wrote the files whole in its own folder first; when that
    copy is still on this machine (Ray's session folder), the torn session is restored from it.
    Otherwise the torn session's files are set aside (``.torn-NAME``) and the experiment resumes
    from the session before, which the other repairs bring up to the trials' checkpoints (and
    with none before, it starts afresh, as one killed before Tune saved anything). A state
    file that parses but lacks what a restore reads (``{}``, a list) is treated as torn."""
    notes = []
    while (session := _newest_session(exp_dir)) is not None:
        files = [exp_dir / n.format(session) for n in _SESSION_FILES]
        torn = [f.name for f in files if not (_whole(f) and _shaped(f))]
        if not torn:
            break
        original = driver_copy(exp_dir, session, tuple(torn))
        if original is not None:  # the driver's files, all of them: one consistent set
            for f in files:
                if (original / f.name).is_file():
                    atomic_write_bytes(f, (original / f.name).read_bytes())
            notes.append(f"resume: the saved state of session {session} was {CUT}; "
                         f"restored from the driver's copy in {original}")
            continue
        for f in files:
            if f.exists():
                f.rename(f.with_name(f".torn-{f.name}"))
        then = "resuming from the state before" if _newest_session(exp_dir) else \
            "no state before it: the experiment starts afresh"
        notes.append(f"resume: the saved state of session {session} was {CUT} and the "
                     f"driver's copy is gone; set aside, {then}")
    return notes


def _newest_session(exp_dir: Path) -> str | None:
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    return states[-1].name[len("experiment_state-"):-len(".json")] if states else None


# What a restore reads of each JSON state, as alternatives (the study's searcher, or the
# confirmation's list searcher): a file with none of them (cut short, or edited to `{}`) is
# no state Tune or the searcher can resume from.
_STATE_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "experiment_state-": (("trial_data", "runner_data"),),
    "searcher-state-": (("spec", "storage_url", "study_name", "baselines", "pending_seeds",
                         "configs", "trial_map", "histories", "done", "asked", "sampler_seed"),
                        ("pending",))}


def _whole(path: Path) -> bool:
    """Whether a state file is absent or complete. Tune's experiment state and this project's
    searcher state are JSON; Tune's ``search_gen_state-*.json`` (and a searcher state from
    before JSON) are pickles, read here opcode by opcode without running them: a pickle cut
    short ends before its STOP."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return True
    try:
        if data[:1] == b"{":
            json.loads(data)
        else:
            for _ in pickletools.genops(data):
                pass
        return True
    except (ValueError, RecursionError):  # JSONDecodeError is one
        return False


def _shaped(path: Path) -> bool:
    """Whether a whole JSON state holds what its restore reads (:data:`_STATE_KEYS`); a
    pickle or an absent file passes (nothing to check without running it)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return True
    if data[:1] != b"{":
        return True
    try:
        state = json.loads(data)
    except (ValueError, RecursionError):
        return False
    shapes = next((k for p, k in _STATE_KEYS.items() if path.name.startswith(p)), ((),))
    return isinstance(state, dict) and any(all(k in state for k in keys) for keys in shapes)


def driver_copy(exp_dir: Path, session: str, needed: tuple[str, ...] = ()) -> Path | None:
    """The driver's own folder of ``exp_dir``'s ``session`` under Ray's temp folder, if it is
    still there, whole, holds every ``needed`` file, and is this experiment's: its state knows
    trials that have folders in ``exp_dir`` (trial ids are random: another study of the same
    name started in the same second shares none)."""
    for folder in _driver_folders(exp_dir):
        files = [folder / n.format(session) for n in _SESSION_FILES]
        if files[0].is_file() and all((folder / n).is_file() for n in needed) \
                and all(_whole(f) for f in files):
            return folder
    return None


def _driver_folders(exp_dir: Path) -> list[Path]:
    """Ray's temp folders of drivers that ran ``exp_dir`` (still on this machine): those whose
    saved state knows a trial with a folder in ``exp_dir``."""
    ray_tmp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    trials = {p.name for p in exp_dir.iterdir() if (p / PARAMS_FILE).is_file()}
    # artifacts/<the experiment's first session>/: a resumed driver keeps that folder's name
    pattern = f"session_*/artifacts/*/{exp_dir.name}/driver_artifacts"
    return [folder for folder in sorted({f.resolve() for f in ray_tmp.glob(pattern)})
            if any(trials & _trial_ids(s) for s in folder.glob("experiment_state-*.json"))]


TUNER_FILE = "tuner.pkl"  # Tune's pickled Tuner: written once, by the first session's Tuner
TUNER_COPY = ".tuner.pkl.whole"  # this project's copy (Tune copies only *.json/*.pkl back)


def keep_tuner_copy(exp_dir: Path) -> None:
    """Copy Tune's ``tuner.pkl`` aside while it is whole (right after the Tuner wrote it, and
    on every repair of an older study): :func:`repair_tuner_file` restores it from here."""
    tuner, copy = exp_dir / TUNER_FILE, exp_dir / TUNER_COPY
    if tuner.is_file() and not copy.is_file() and _whole_pickle(tuner):
        atomic_write_bytes(copy, tuner.read_bytes())


def repair_tuner_file(exp_dir: Path) -> list[str]:
    """Make Tune's ``tuner.pkl`` whole before Tune restores the experiment from it.

    Tune writes it once, but a resumed driver copies every ``*.json``/``*.pkl`` of the
    experiment folder into its own folder and back again with each save, in place: a kill
    during that copy leaves ``tuner.pkl`` cut short (empty, often), and every later resume
    failed with ``EOFError: Ran out of input``. It is restored from this project's copy
    (:func:`keep_tuner_copy`), else from a driver's folder still on this machine; with
    neither, the resume stops in one line before Tune reads anything."""
    tuner = exp_dir / TUNER_FILE
    if not tuner.is_file() or _whole_pickle(tuner):
        keep_tuner_copy(exp_dir)
        return []
    sources = [exp_dir / TUNER_COPY] + [f / TUNER_FILE for f in _driver_folders(exp_dir)]
    source = next((s for s in sources if s.is_file() and _whole_pickle(s)), None)
    if source is None:
        from ._folder import StudyError

        raise StudyError(f"{tuner} was {CUT} and no whole copy is left ({TUNER_COPY} "
                         f"beside it, or Ray's driver folder under "
                         "$RAY_TMPDIR/ray): this experiment cannot be resumed; start the "
                         "study again in a new folder")
    atomic_write_bytes(tuner, source.read_bytes())
    keep_tuner_copy(exp_dir)
    return [f"resume: {exp_dir.name}/{TUNER_FILE} was {CUT}; restored from {source}"]


def _whole_pickle(path: Path) -> bool:
    """A pickle that reaches its STOP (``_whole`` takes an empty file for a pickle)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return bool(data) and data[:1] != b"{" and _whole(path)


def _trial_ids(state: Path) -> set[str]:
    try:
        return {json.loads(e[0])["trial_id"]
                for e in json.loads(state.read_text())["trial_data"]}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return set()


def _checkpoint_index(path: Path) -> int:
    tail = path.name.rpartition("_")[2]
    return int(tail) if tail.isdigit() else -1


def _saved_trials(exp_dir: Path) -> list[SavedTrial]:
    """The trials of the newest saved experiment state (the one Tune restores); empty when it
    cannot be read (nothing to repair)."""
    session = _newest_session(exp_dir)
    if session is None:
        return []
    try:
        state = exp_dir / _SESSION_FILES[0].format(session)
        entries = json.loads(state.read_text())["trial_data"]
    except (OSError, ValueError, KeyError):
        return []
    saved = []
    for entry in entries:
        try:
            trial, meta = json.loads(entry[0]), json.loads(entry[1])
            folder = exp_dir / trial["relative_logdir"]
            name = (meta.get("last_result") or {}).get("checkpoint_dir_name")
            kept = tuple(folder / n for n in _kept_checkpoints(meta.get("checkpoint_manager")))
            saved.append(SavedTrial(trial["trial_id"], trial["status"], folder,
                                    folder / name if name else None, kept))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return saved


def restore_deleted_checkpoints(exp_dir: Path,
                                trials: list[SavedTrial] | None = None) -> list[str]:
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
    for t in _saved_trials(exp_dir) if trials is None else trials:
        if t.status == "TERMINATED":
            continue
        for missing in sorted({*t.kept, *([t.named] if t.named else [])},
                              key=_checkpoint_index):
            if missing.exists():
                continue
            later = sorted((c for c in missing.parent.glob("checkpoint_*")
                            if _checkpoint_index(c) > _checkpoint_index(missing)
                            and (c / STATE_FILE).is_file()), key=_checkpoint_index)
            if not later:
                continue  # nothing to restart from; Tune reports the trial failed
            shutil.copytree(later[0], missing)
            notes.append(f"resume: trial {t.trial_id}'s saved state names {missing.name}, "
                         f"which Tune had deleted; restarting it from {later[0].name}")
    return notes


_CHECKPOINT_NAME = re.compile(r"(?:^|/)(checkpoint_\d+)/?$")


def _kept_checkpoints(manager: Any) -> list[str]:
    """The checkpoint folder names in a trial's saved checkpoint manager, read from its pickle
    opcode by opcode, never unpickled (the folder may come from elsewhere: a pickle runs
    code). Tune saves the manager as ``{"_type": "CLOUDPICKLE_FALLBACK", "value": hex}``;
    anything else holds no names."""
    if not isinstance(manager, dict) or not isinstance(manager.get("value"), str):
        return []
    try:
        blob = bytes.fromhex(manager["value"])
        found = [m.group(1) for op, arg, _ in pickletools.genops(blob)
                 if isinstance(arg, str) and (m := _CHECKPOINT_NAME.search(arg))]
    except (ValueError, RecursionError):
        return []
    return sorted(set(found))


def _trained(t: SavedTrial) -> tuple[Path, list[dict[str, Any]]] | None:
    """The checkpoint whose epochs Tune will not report again, and its history: a finished
    trial's newest (the longest history), a resumed trial's restore point (its checkpoint
    manager's latest; the last result's checkpoint for a state without one)."""
    from trainables.checkpoint import read_history

    restores = t.kept[-1] if t.kept else t.named
    folders = list(t.folder.glob("checkpoint_*")) if t.status == "TERMINATED" else \
        [restores] if restores is not None else []
    best: tuple[Path, list[dict[str, Any]]] | None = None
    for folder in folders:
        history = read_history(folder)
        if history and (best is None or len(history) > len(best[1])):
            best = (folder, history)
    return best


def _append_results(t: SavedTrial, reported: list[dict[str, Any]], checkpoint: Path,
                    history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add to the trial's ``result.json`` (``reported``: its records) every epoch ``history``
    holds and it lacks, the whole file replaced atomically; returns the added records."""
    from trainables.checkpoint import HISTORY_FILE


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
    added = [{**r, **carried, "trial_id": t.trial_id, "timestamp": when,
              "epochs_done": int(r["epoch"]) + 1, "recovered_from": checkpoint.name}
             for r in missing]
    atomic_write_text(path, text + "".join(json.dumps(r) + "\n" for r in added))
    return added


def _carried(folder: Path, last: dict[str, Any]) -> dict[str, Any]:
    """What a recovered epoch takes from its trial: the config Tune saved beside the results
    (as every reported line has it), and from the last reported line where and how it ran."""
    carried = {k: last[k] for k in _CARRIED if k in last}
    try:
        config = json.loads((folder / PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return carried
    return {"config": config, BASELINE_KEY: int(bool(config.get(BASELINE_KEY))), **carried}


def recover_records(exp_dir: Path, trials: list[SavedTrial] | None = None,
                    where: Any = None) -> list[str]:
    """Bring the experiment's records up to its trials' checkpoints: each trial's
    ``result.json`` (what the MLflow finish and ``mistudy sync`` log) and the searcher's saved
    histories (what it tells Optuna), including a completion the searcher's state missed."""
    notes: list[str] = []
    records: dict[str, list[dict[str, Any]]] = {}
    finished: set[str] = set()

    for t in _saved_trials(exp_dir) if trials is None else trials:
        reported = read_results(t.folder)
        added: list[dict[str, Any]] = []
        if (found := _trained(t)) is not None:
            added = _append_results(t, reported, *found)
            if added:
                notes.append(f"resume: trial {t.trial_id}'s results lacked epoch(s) "
                             f"{', '.join(str(r['epoch']) for r in added)}, which its "
                             f"{found[0].name} holds (the driver was killed before Tune "
                             "copied them); recorded from it")
        records[t.trial_id] = sorted(reported + added, key=lambda r: int(r["epoch"]))
        if t.status == "TERMINATED":
            finished.add(t.trial_id)
    return notes + _recover_searcher(exp_dir, records, finished, where)


def _recover_searcher(exp_dir: Path, records: dict[str, list[dict[str, Any]]],
                      finished: set[str], where: Any = None) -> list[str]:
    """The same for the study searcher's state file Tune restores (the newest by name)."""
    from ._searcher import StudySearcher

    states = sorted(exp_dir.glob(StudySearcher.CKPT_FILE_TMPL.format("*")))
    if not states:
        return []
    searcher = StudySearcher.from_state_file(states[-1], where)
    if searcher is None:
        return []  # another searcher (a confirmation's list), or a state from before JSON
    added, completed = searcher.recover(records, finished)
    if not (added or completed):
        return []
    searcher.save(str(states[-1]))
    return [f"resume: the searcher's saved state lacked {added} epoch record(s) and "
            f"{len(completed)} finished trial(s); recovered from the trials' records"]


UNSAVED_DIR = ".unsaved"  # trial folders no saved state knows, moved out of Tune's way


def set_aside_unsaved_trials(exp_dir: Path) -> list[str]:
    """A trial Tune started after it last saved the experiment (a kill came first), or one of
    a session whose torn state was set aside: no state the resume restores knows it, so its
    configuration is asked and run again as a new trial, and its folder would stay beside
    the study's trials with records no run shows. It is moved into ``.unsaved/`` (kept, not
    deleted; one line each)."""
    known = {t.trial_id for t in read_trials(exp_dir)}
    if not known:
        return []  # nothing saved at all: study._experiments.discard_unsaved's case
    notes = []
    for folder in sorted(p for p in exp_dir.iterdir() if p.is_dir()):
        if folder.name.startswith(".") or folder.name in known \
                or not (folder / PARAMS_FILE).is_file():
            continue
        dest = exp_dir / UNSAVED_DIR / folder.name
        dest.parent.mkdir(exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)  # an older copy of the same unsaved trial
        os.replace(folder, dest)
        notes.append(f"resume: trial {folder.name} started after the last saved state; its "
                     f"folder is set aside in {UNSAVED_DIR}/ and its configuration runs again")
    return notes


def repair(exp_dirs: Iterable[Path], where: Any = None) -> list[str]:
    """Every repair a killed driver can have made necessary, for each experiment, in order: a
    torn ``tuner.pkl`` or saved state made whole or set aside, checkpoints the state names
    but Tune deleted restored, records that trail the checkpoints recovered (this module).
    One line per repair. Called once per command, before anything reads or restores a saved state
    (``run --resume``, ``confirm``, ``sync``); a repaired folder needs none the second time."""
    notes: list[str] = []
    for exp_dir in exp_dirs:
        if exp_dir.exists():
            notes += repair_tuner_file(exp_dir) + repair_torn_state(exp_dir)
            notes += set_aside_unsaved_trials(exp_dir)
            notes += prepare_resume(exp_dir, where)
    return notes
