"""The one checkpoint layout of a training run, wherever it is kept: in Tune's checkpoint folders
(the Ray trainable) or in a run's own folder (the reproduction).

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
from pathlib import Path
from typing import Any

from .records import atomic_write_bytes, atomic_write_text, run_name

__all__ = ["STATE_FILE", "HISTORY_FILE", "PLOT_FILE", "save", "load", "read_history"]

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
