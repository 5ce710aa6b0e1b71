"""Progress of a running study: trials finished / running / pending / failed, each running
trial's epoch, and an ETA from the epoch times measured so far.

On a terminal it is one tqdm bar (trials done out of all) whose text lists the running trials
(``power p=0.5 α=1.01 b256 s0 epoch 12/50``), with a line above it as each trial starts and
ends; elsewhere (CI logs, ``| tee``) one plain line
per event: a trial started, an epoch reported, a trial finished or failed.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

from trainables.records import run_name

__all__ = ["StudyProgress", "eta_seconds"]


def eta_seconds(epoch_seconds: list[float], running: dict[str, int], pending: int, epochs: int,
                slots: int) -> float | None:
    """Remaining epochs (the running trials' rest + the pending trials') times the mean epoch
    time, shared over the trials that run at once. None until an epoch was measured."""
    if not epoch_seconds:
        return None
    left = sum(max(0, epochs - e) for e in running.values()) + pending * epochs
    return left * (sum(epoch_seconds) / len(epoch_seconds)) / max(1, slots)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class StudyProgress(Callback):
    def __init__(self, total: int, epochs: int, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.total, self.epochs = total, epochs
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.names: dict[str, str] = {}
        self.running: dict[str, int] = {}  # trial id -> epochs done
        self.done = self.failed = 0
        self.epoch_seconds: list[float] = []
        self.slots = 1
        self.t0 = time.time()
        self._bar: Any = None

    def __getstate__(self) -> dict[str, Any]:  # Tune saves callbacks with its state
        return {**self.__dict__, "_bar": None, "stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = sys.stdout

    # ---- Tune's events ----------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.names[trial.trial_id] = run_name(trial.config)
        self.running.setdefault(trial.trial_id, 0)
        self.slots = max(self.slots, len(self.running))
        self._event(f"start  {self.names[trial.trial_id]}", line=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        done = int(result.get("epochs_done", result.get("epoch", 0) + 1))
        self.running[trial.trial_id] = done
        if "epoch_seconds" in result:
            self.epoch_seconds.append(float(result["epoch_seconds"]))
        self._event(f"epoch  {self._name(trial)} {done}/{self.epochs}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.pop(trial.trial_id, None)
        self.done += 1
        r = trial.last_result or {}
        self._event(f"done   {self._name(trial)}: gap {r.get('gap', float('nan')):.4f}, "
                    f"test acc {r.get('test_acc', float('nan')):.3f}", advance=True, line=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from ._experiments import trial_error_text

        self.running.pop(trial.trial_id, None)
        self.failed += 1
        self._event(f"FAILED {self._name(trial)}: {trial_error_text(trial)}", advance=True,
                    line=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ---- rendering ----------------------------------------------------------------------
    def _name(self, trial: Any) -> str:
        return self.names.get(trial.trial_id) or run_name(trial.config)

    def counts(self) -> dict[str, Any]:
        pending = max(0, self.total - self.done - self.failed - len(self.running))
        eta = eta_seconds(self.epoch_seconds, self.running, pending, self.epochs, self.slots)
        return {"finished": self.done, "running": len(self.running), "pending": pending,
                "failed": self.failed, "eta": _clock(eta)}

    def _summary(self) -> str:
        c = self.counts()
        return (f"{c['finished']} finished, {c['running']} running, {c['pending']} pending, "
                f"{c['failed']} failed, ETA {c['eta']}")

    def _event(self, text: str, advance: bool = False, line: bool = False) -> None:
        """A line per event when piped; on a terminal the bar, with a line above it for a
        trial's start and end (``line``). A reader that went away (``| head``) or a full
        disk behind stdout ends the display, never the study: its records and the final
        summary are elsewhere (the study folder, the store)."""
        if self.stream is None:
            return
        try:
            self._show(text, advance, line)
        except (OSError, ValueError):  # EPIPE, ENOSPC; a closed stream
            self.stream = None
            self._bar = None

    def _show(self, text: str, advance: bool, line: bool) -> None:
        if not self.tty:
            print(f"[{time.time() - self.t0:7.0f}s] {text} | {self._summary()}",
                  file=self.stream, flush=True)
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=self.total, file=self.stream, unit="trial",
                             dynamic_ncols=True,  # tqdm puts ", " before the postfix itself
                             # a fixed-width bar: the running trials' names, cut at the
                             # terminal's edge, must not squeeze it to nothing
                             bar_format="{l_bar}{bar:20}| {n}/{total} [{elapsed}]{postfix}")
        if advance:
            self._bar.update(1)
        if line:
            self._bar.write(text, file=self.stream)
        epochs = ", ".join(f"{self.names.get(t, t)} epoch {e}/{self.epochs}"
                           for t, e in list(self.running.items())[:3])
        more = f" +{len(self.running) - 3}" if len(self.running) > 3 else ""
        self._bar.set_description("trials", refresh=False)
        self._bar.set_postfix_str(f"{self._summary()}{' | ' if epochs else ''}{epochs}{more}")
