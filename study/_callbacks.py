"""Driver-side Tune callbacks: MLflow logging (buffered, idempotent) and a terse progress log."""

from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables.records import RECORD_KEYS, TAGS
from trainables.studyfolder import storage_failure

from ._experiments import read_results, trial_error_text
from ._folder import record_timings
from ._tracking import Tracker, no_backoff_in_this_thread, record_of

__all__ = ["MlflowCallback", "trial_folders"]


def trial_folders(trial: Any) -> tuple[str, str]:
    """Where a trial's results are freshest (the driver's copy, which Tune copies into the
    study folder only later) and where its checkpoints are (the study folder: the workers
    upload them there, with the plot each trial drew)."""
    return str(trial.local_path or trial.path), str(trial.path)


SERVER_THREADS = 8  # parallel calls to a tracking server while flushing a backlog (1: 412, 4: 451,
# 8: 492 trial-epochs/s into a 2-worker server on the same 2 cores, 200 trials; bench_tracking)


class MlflowCallback(Callback):
    """Logs every epoch of every trial to its one MLflow run, from a background thread, so
    Tune's event loop never waits on the tracking store. When MLflow is unreachable the
    records stay queued and are retried; nothing is dropped (and ``sync_study`` reconciles
    with Tune's own results at the end)."""

    def __init__(self, tracker: Tracker, retry_seconds: float = 2.0,
                 drain_timeout: float = 120.0) -> None:
        self.tracker = tracker
        self.retry_seconds = retry_seconds
        self.drain_timeout = drain_timeout
        self._init_state()

    def _init_state(self) -> None:
        self.seconds = 0.0  # time spent logging (the study's MLflow overhead, off the loop)
        self.failures = 0
        self.storage_failed = False  # the last failure was a full disk / read-only store
        self.pending: dict[str, dict[int, dict[str, Any]]] = {}  # trial -> epoch -> record
        self.configs: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, str]] = {}  # trial -> tags still to set
        # trial -> (results folder, checkpoints folder), status, error
        self.finished: dict[str, tuple[tuple[str, str], str, str | None]] = {}
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tracker": self.tracker, "retry_seconds": self.retry_seconds,
                "drain_timeout": self.drain_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    # ---- Tune's thread: enqueue only ------------------------------------------------------
    def relocate(self, where: Any) -> None:
        """The restoring command's study location, for the tracker Tune unpickled."""
        self.tracker.relocate(where)

    def _put(self, event: tuple) -> None:
        if self._thread is None:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._work, name="mistudy-mlflow",
                                            daemon=True)
            self._thread.start()
        assert self._queue is not None
        self._queue.put(event)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if all(k in result for k in RECORD_KEYS):
            record = {**record_of(result), "timestamp": result.get("timestamp", time.time())}
            self._put(("result", trial.trial_id, dict(trial.config), record, _tags(result)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(("finish", trial.trial_id, dict(trial.config), trial_folders(trial), "FINISHED",
                   None))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(("finish", trial.trial_id, dict(trial.config), trial_folders(trial), "FAILED",
                   trial_error_text(trial)))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._thread is not None and self._queue is not None:
            self._queue.put(("stop",))
            self._thread.join(self.drain_timeout)
            if self.pending or self.finished:
                why = ("cannot be written (disk full or read-only)" if self.storage_failed
                       else "is still unreachable")
                print(f"mistudy: the MLflow store {why}; the study's results are safe in "
                      "Tune's folder: run `mistudy sync --out DIR` when it is back",
                      file=sys.stderr)
        if self.tracker.timings_path:
            record_timings(self.tracker.timings_path,
                           {"mlflow_callback_seconds": self.seconds,
                            "driver_plots": self.tracker.plots_drawn})

    # ---- the logging thread ---------------------------------------------------------------
    def _work(self) -> None:
        assert self._queue is not None
        no_backoff_in_this_thread()  # this loop retries every retry_seconds itself
        stopping = False
        while True:
            try:
                event = self._queue.get(timeout=self.retry_seconds)
                self._absorb(event)
                stopping = stopping or event[0] == "stop"
                while not self._queue.empty():  # batch whatever else has arrived
                    event = self._queue.get_nowait()
                    self._absorb(event)
                    stopping = stopping or event[0] == "stop"
            except queue.Empty:
                pass
            ok = self.flush()
            if stopping and (ok or self._gave_up()):
                return
            if not ok:
                time.sleep(self.retry_seconds)

    def _gave_up(self) -> bool:
        if self.storage_failed:
            return True
        self._stop_deadline = getattr(self, "_stop_deadline", time.time() + self.drain_timeout)
        return time.time() > self._stop_deadline

    def _absorb(self, event: tuple) -> None:
        if event[0] == "result":
            _, tid, config, record, tags = event
            self.configs[tid] = config
            self.pending.setdefault(tid, {})[int(record["epoch"])] = record
            if int(record["epoch"]) == 0 or tid not in self.tracker._runs:
                self.tags[tid] = tags
        elif event[0] == "finish":
            _, tid, config, folders, status, error = event
            self.configs[tid] = config
            self.finished[tid] = (folders, status, error)

    def _try(self, fn: Any) -> bool:
        t0 = time.perf_counter()
        try:
            fn()
            return True
        except Exception as exc:  # tracking store down: keep the records, retry later
            self.failures += 1
            # A full disk or read-only store is not cured by waiting: at the end, give up at
            # once (Tune's folder keeps every record; `mistudy sync` logs them later).
            self.storage_failed = storage_failure(exc) is not None
            if self.failures in (1, 10, 100):
                print(f"mistudy: MLflow unavailable ({type(exc).__name__}); records are kept "
                      f"and flushed when it is back", file=sys.stderr)
            return False
        finally:
            self.seconds += time.perf_counter() - t0

    def flush(self) -> bool:
        """Log what is pending; True when nothing is left."""
        for tid in list(self.tags):
            if self._try(lambda tid=tid: self.tracker.set_tags(
                    self.tracker.ensure_trial_run(tid, self.configs[tid]), self.tags[tid])):
                del self.tags[tid]
        def log(tid: str) -> bool:  # a trial's whole backlog, coalesced by the tracker
            records = [self.pending[tid][e] for e in sorted(self.pending[tid])]
            return self._try(lambda: self.tracker.log_records(
                self.tracker.ensure_trial_run(tid, self.configs[tid]), records))

        tids = list(self.pending)
        if self.tracker.tracking_uri.startswith(("http:", "https:")) and len(tids) > 1:
            # A server answers calls in parallel: trials side by side, each one's in order.
            with ThreadPoolExecutor(max_workers=SERVER_THREADS,
                                    initializer=no_backoff_in_this_thread) as pool:
                done = list(pool.map(log, tids))
        else:  # SQLite takes one writer at a time: threads would only queue on its lock
            done = [log(tid) for tid in tids]
        for tid, ok in zip(tids, done):
            if ok:
                del self.pending[tid]
        for tid, (folders, status, error) in list(self.finished.items()):
            if tid in self.pending:
                continue
            if self._try(lambda tid=tid, folders=folders, status=status, error=error:
                         self._finish(tid, folders, status, error)):
                del self.finished[tid]
        return not (self.pending or self.finished or self.tags)

    def _finish(self, tid: str, folders: tuple[str, str], status: str,
                error: str | None) -> None:
        records = read_results(Path(folders[0]))
        run = self.tracker.ensure_trial_run(tid, self.configs[tid])
        self.tracker.finish_trial(run, records, self.configs[tid], status, error,
                                  trial_dir=folders[1])


def _tags(result: dict[str, Any]) -> dict[str, str]:
    return {TAGS.node: str(result.get("node_ip", "")),
            TAGS.hostname: str(result.get("hostname", "")),
            TAGS.node_id: str(result.get("node_id", "")),
            TAGS.cuda_visible_devices: str(result.get("cuda_visible_devices", "")),
            TAGS.device: str(result.get("device", ""))}
