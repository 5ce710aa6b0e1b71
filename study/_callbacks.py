"""Driver-side Tune callbacks: MLflow logging (buffered, idempotent) and a terse progress log."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray.tune import Callback, Stopper
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from trainables.records import BASELINE_KEY, ENQUEUED_KEY, PHASE_KEY, RECORD_KEYS, TAGS
from trainables.saturation import saturation_epoch
from trainables.studyfolder import storage_failure

from ._experiments import read_results, trial_error_text
from ._folder import record_timings
from ._tracking import Tracker, record_of

__all__ = ["MlflowCallback", "SaturationStopper", "BaselineSafeASHA", "ClosurePruner",
           "trial_folders"]


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
            with ThreadPoolExecutor(max_workers=SERVER_THREADS) as pool:
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


class SaturationStopper(Stopper):
    """Ends a trial once ``I(Y;Ŷ)`` has saturated (the paper's §5.3); baselines run on."""

    def __init__(self, window: int = 3, rel_tol: float = 0.01, grad_tol: float | None = None,
                 min_epochs: int = 1) -> None:
        self.kw: dict[str, Any] = {"window": window, "rel_tol": rel_tol, "grad_tol": grad_tol}
        self.min_epochs = min_epochs
        self.history: dict[str, list[tuple[float, float]]] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if result.get(BASELINE_KEY) or "mi_y_yhat" not in result:
            return False
        h = self.history.setdefault(trial_id, [])
        h.append((float(result["mi_y_yhat"]), float(result["mi_grad_norm"])))
        if len(h) < self.min_epochs:
            return False
        return saturation_epoch([m for m, _ in h], [g for _, g in h], **self.kw) is not None

    def stop_all(self) -> bool:
        return False


class BaselineSafeASHA(AsyncHyperBandScheduler):
    """ASHA that never stops the matched CE baselines (gap closure needs them complete)."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.config.get(BASELINE_KEY):
            return TrialScheduler.CONTINUE
        return str(super().on_trial_result(tune_controller, trial, result))



class ClosurePruner(FIFOScheduler):
    """``scheduler: closure``: stops a sampled configuration's trials on its comparison with
    the matched CE baselines at the same epochs (``trainables.pruning.decide``, the rule
    ``mistudy replay`` proves on recorded studies). A configuration is judged once every seed
    has reached an epoch (the mean over seeds), and pruned whole. Baselines, enqueued
    configurations and confirmation runs are never stopped. A seed that runs ahead of the
    others is stopped at its next result after the decision (unless it has finished; measured:
    2-3% of a study's searched epochs, docs/performance.md §2c). Every decision is written
    to the folder's ``pruning.json`` before the trial is stopped (Tune saves no scheduler
    state): a resumed study reads it back and keeps each decision; records a resumed trial
    does not report again are read from the trials' ``result.json``."""

    def __init__(self, rules: dict[str, Any], seeds: int, path: str) -> None:
        super().__init__()
        self.rules_raw, self.seeds, self.path = dict(rules), seeds, path
        self._fresh()

    def _fresh(self) -> None:
        self.records: dict[str, dict[int, dict[str, Any]]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.members: dict[int, set[str]] = {}
        self.state: dict[str, Any] | None = None
        self.read_dirs: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"rules_raw": self.rules_raw, "seeds": self.seeds, "path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from ._folder import location

        self.__dict__.update(state)
        here = location()
        if here is not None:  # the folder as it is now (a moved folder's record moves too)
            from trainables.studyfolder import StudyPaths

            self.path = str(StudyPaths(Path(here["root"])).pruning)
        self._fresh()

    @property
    def rules(self) -> Any:
        from trainables.pruning import PruneRules

        raw = dict(self.rules_raw)
        if "rungs" in raw:
            raw["rungs"] = tuple(raw["rungs"])
        return PruneRules(**raw)

    def _load(self) -> dict[str, Any]:
        if self.state is None:
            from trainables.pruning import read_decisions

            self.state = read_decisions(Path(self.path))
        return self.state

    def _save(self) -> None:
        from trainables.records import atomic_write_text

        atomic_write_text(Path(self.path), json.dumps(self._load(), indent=1))

    def _read_experiment(self, trial: Any) -> None:
        """Once per experiment: the records of trials that will not report them again (a
        resumed study's finished baselines, the epochs before a restored trial's restart)."""
        from ._experiments import read_trials

        exp = str(Path(str(trial.path)).parent)
        if exp in self.read_dirs:
            return
        self.read_dirs.add(exp)
        for t in read_trials(Path(exp)):
            self.configs.setdefault(t.trial_id, t.config)
            recs = self.records.setdefault(t.trial_id, {})
            for r in read_results(t.path):
                recs.setdefault(int(r["epoch"]), r)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        from trainables.closure import match_key
        from trainables.pruning import decide, mean_scores

        cfg = trial.config
        if cfg.get(PHASE_KEY) or "epoch" not in result:
            return str(TrialScheduler.CONTINUE)
        self._read_experiment(trial)
        self.configs[trial.trial_id] = cfg
        self.records.setdefault(trial.trial_id, {})[int(result["epoch"])] = dict(result)
        if cfg.get(BASELINE_KEY) or cfg.get(ENQUEUED_KEY) or "optuna_trial" not in cfg:
            return str(TrialScheduler.CONTINUE)
        number, st = int(cfg["optuna_trial"]), self._load()
        if str(number) in st["pruned"]:
            return str(TrialScheduler.STOP)
        members = self.members.setdefault(number, set())
        members.update(t for t, c in self.configs.items()
                       if not c.get(BASELINE_KEY) and c.get("optuna_trial") == number)
        epochs = len(self.records[trial.trial_id])
        if len(members) < self.seeds or any(len(self.records.get(t, {})) < epochs
                                            for t in members):
            return str(TrialScheduler.CONTINUE)  # judged when the last seed gets here
        base = {match_key(c): list(self.records.get(t, {}).values())
                for t, c in self.configs.items() if c.get(BASELINE_KEY)}
        pairs = [(sorted(self.records[t].values(), key=lambda r: r["epoch"]),
                  base.get(match_key(self.configs[t]))) for t in sorted(members)]
        rules = self.rules
        reached = {int(e): v for e, v in st["reached"].items()}
        rule = decide(rules, pairs, epochs, reached)
        scores = mean_scores(pairs, epochs, rules.window)
        value = None if scores is None else scores["gap_reduction"]
        if rule is not None:
            st["pruned"][str(number)] = [epochs, rule, value]
            self._save()
            return str(TrialScheduler.STOP)
        passed = st["passed"].setdefault(str(number), [])
        if epochs in rules.rungs and epochs not in passed and value is not None:
            passed.append(epochs)
            st["reached"].setdefault(str(epochs), []).append(value)
            self._save()
        return str(TrialScheduler.CONTINUE)
