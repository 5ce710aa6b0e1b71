"""The one checkpoint layout of a training run, wherever it is kept -- in Tune's checkpoint
folders (the Ray trainable), a run's own folder (``mistudy train``, the reproduction) -- and the
one checkpointed epoch loop all three train through (:func:`checkpointed_epoch`,
:func:`checkpointed_run`).

    state.pt          the trainer's state (model, optimizer, RNG, epoch, kernel widths)
    history.json      every epoch's record so far
    trajectories.png  the run's plot, drawn once, with the last epoch

Each file is written atomically; ``history.json`` before ``state.pt``, so a kill between the two
leaves a history one epoch ahead of the state, which :func:`load` cuts back (the epoch is
trained again, never skipped). Loading uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .fileio import atomic_write_bytes, atomic_write_text
from .records import run_name

__all__ = ["STATE_FILE", "HISTORY_FILE", "PLOT_FILE", "save", "load", "read_history",
           "checkpointed_epoch", "checkpointed_run"]

STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"
PLOT_FILE = "trajectories.png"


def save(folder: Path, trainer: Any, history: list[dict[str, Any]] | None,
         draw: bool = False) -> None:
    """Checkpoint ``trainer`` (and its records) into ``folder``; ``draw`` adds the plot."""
    folder = Path(folder)
    if history is not None:
        atomic_write_text(folder / HISTORY_FILE, json.dumps(history))
        if draw:
            _draw(history, folder, trainer.cfg)
    buf = io.BytesIO()
    import torch  # here, not at import: the study driver reads histories without torch

    torch.save(trainer.state_dict(), buf)
    atomic_write_bytes(folder / STATE_FILE, buf.getvalue())


def load(folder: Path, trainer: Any) -> list[dict[str, Any]] | None:
    """Restore ``trainer`` from ``folder``; the records up to its epoch (None when the folder
    has no history: a checkpoint from before histories were kept)."""
    folder = Path(folder)
    import torch

    trainer.load_state_dict(torch.load(folder / STATE_FILE, weights_only=True))
    history = read_history(folder)
    return None if history is None else history[:trainer.epoch]


def read_history(folder: Path) -> list[dict[str, Any]] | None:
    """The records in ``history.json``, or None when it is missing or not a list of records
    (each an object with an integer epoch): a damaged file is no history."""
    try:
        data = json.loads((Path(folder) / HISTORY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    ok = isinstance(data, list) and all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in data)
    return data if ok else None


def _draw(history: list[dict[str, Any]], folder: Path, cfg: Any) -> None:
    """The run's trajectory plot, drawn where it ran (not on a study's driver)."""
    from .plots import plot_trial

    try:
        plot_trial(history, folder / PLOT_FILE, run_name(cfg.to_dict()))
    except ImportError:  # a box without matplotlib: the driver draws it
        pass


Record = dict[str, Any]


def checkpointed_epoch(trainer: Any, history: list[Record] | None, folder: Path, *,
                       before_save: Callable[[Record], None] | None = None,
                       draw: bool = False) -> Record:
    """Train one epoch and checkpoint it into ``folder``: the record joins ``history``, goes
    to ``before_save`` (a metrics row, Fig. 1's curve: written before the checkpoint, so a
    kill between the two trains that epoch again, never skips it), then :func:`save` (the
    plot too with the last epoch, when ``draw``). Raises ``TrialDiverged`` (one line) on a
    non-finite value, before anything of that epoch is written."""
    record = trainer.step()
    if history is not None:
        history.append(record)
    if before_save is not None:
        before_save(record)
    save(folder, trainer, history, draw=draw and trainer.epoch >= trainer.cfg.epochs)
    return record


def checkpointed_run(trainer: Any, history: list[Record] | None,
                     folders: Callable[[], AbstractContextManager[Any]],
                     on_epoch: Callable[[Record, Path], None] | None = None, *,
                     before_save: Callable[[Record], None] | None = None,
                     draw: bool = False) -> list[Record] | None:
    """Every epoch ``trainer`` has left (it may have been restored by :func:`load`), each
    through :func:`checkpointed_epoch` into the folder ``folders()`` opens -- the run's own
    folder, or a fresh one Tune takes over -- and then ``on_epoch(record, folder)`` while that
    folder is open. Returns ``history``."""
    while trainer.epoch < trainer.cfg.epochs:
        with folders() as d:
            record = checkpointed_epoch(trainer, history, Path(d), before_save=before_save,
                                        draw=draw)
            if on_epoch is not None:
                on_epoch(record, Path(d))
    return history

