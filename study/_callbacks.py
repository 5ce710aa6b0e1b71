"""Driver-side Tune callbacks: MLflow logging (buffered, idempotent) and a terse progress log."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback, Stopper
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from trainables.loop import RECORD_KEYS
from trainables.saturation import saturation_epoch

from ._tracking import TAG, Tracker, read_trial_results, record_of

__all__ = ["MlflowCallback", "ProgressCallback", "SaturationStopper", "BaselineSafeASHA",
           "trial_error_text"]


def trial_error_text(trial: Any) -> str:
    """The last line of a failed trial's traceback (the reason), or a generic note."""
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        return lines[-1] if lines else "trial failed"
    except OSError:
        return "trial failed (no error file)"


class MlflowCallback(Callback):
    """Logs every epoch of every trial to its one MLflow run. When MLflow is unreachable the
    records stay here and are flushed on the next event; nothing is dropped."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.seconds = 0.0  # time spent logging (the study's MLflow overhead)
        self.pending: dict[str, dict[int, dict[str, Any]]] = {}  # trial id -> epoch -> record
        self.finished: dict[str, tuple[Any, str]] = {}  # trial id -> (trial, status) to finish
        self.failures = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"tracker": self.tracker, "pending": {}, "finished": {}, "failures": 0,
                "seconds": 0.0}

    def _tags(self, result: dict[str, Any]) -> dict[str, str]:
        return {f"{TAG}.node": str(result.get("node_ip", "")),
                f"{TAG}.hostname": str(result.get("hostname", "")),
                f"{TAG}.node_id": str(result.get("node_id", "")),
                f"{TAG}.cuda_visible_devices": str(result.get("cuda_visible_devices", "")),
                f"{TAG}.device": str(result.get("device", ""))}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if not all(k in result for k in RECORD_KEYS):
            return
        self.pending.setdefault(trial.trial_id, {})[int(result["epoch"])] = {
            **record_of(result), "timestamp": result.get("timestamp", time.time())}
        if int(result["epoch"]) == 0 or trial.trial_id not in self.tracker._runs:
            self._try(lambda: self.tracker.set_tags(
                self.tracker.ensure_trial_run(trial.trial_id, trial.config),
                self._tags(result)))
        self.flush(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished[trial.trial_id] = (trial, "FINISHED")
        self.flush(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished[trial.trial_id] = (trial, "FAILED")
        self.flush(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush(trials)
        if self.tracker.timings_path:
            _merge_json(self.tracker.timings_path, {"mlflow_callback_seconds": self.seconds})


    def _try(self, fn: Any) -> bool:
        t0 = time.perf_counter()
        try:
            fn()
            return True
        except Exception as exc:  # tracking store down: keep the records, retry later
            self.failures += 1
            if self.failures in (1, 10, 100):
                print(f"mistudy: MLflow unavailable ({type(exc).__name__}); records are kept "
                      f"and flushed when it is back", file=sys.stderr)
            return False
        finally:
            self.seconds += time.perf_counter() - t0

    def flush(self, trials: list | None = None) -> None:
        for trial_id in list(self.pending):
            records = [self.pending[trial_id][e] for e in sorted(self.pending[trial_id])]
            trial = next((t for t in trials or [] if t.trial_id == trial_id), None)
            config = trial.config if trial is not None else {}

            def log(trial_id: str = trial_id, records: list = records, config: Any = config
                    ) -> None:
                run = self.tracker.ensure_trial_run(trial_id, config)
                self.tracker.log_records(run, records)

            if self._try(log):
                del self.pending[trial_id]
        for trial_id, (trial, status) in list(self.finished.items()):
            if trial_id in self.pending:
                continue
            if self._try(lambda trial=trial, status=status: self._finish(trial, status)):
                del self.finished[trial_id]

    def _finish(self, trial: Any, status: str) -> None:
        records = read_trial_results(Path(trial.local_path or trial.path))
        run = self.tracker.ensure_trial_run(trial.trial_id, trial.config)
        error = trial_error_text(trial) if status == "FAILED" else None
        self.tracker.finish_trial(run, records, trial.config, status, error)


class ProgressCallback(Callback):
    """One line per finished trial, so a study's log stays readable."""

    def __init__(self, objective: str) -> None:
        self.objective = objective
        self.t0 = time.time()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        r = trial.last_result or {}
        tr = trial.config.get("transition", {})
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in tr.items() if k != "family")
        kind = "baseline" if trial.config.get("mistudy_baseline") else tr.get("family")
        print(f"[{time.time() - self.t0:6.0f}s] {trial.trial_id} {kind} {params} "
              f"α={trial.config.get('alpha', 0):.3g} batch={trial.config.get('batch_size')} "
              f"seed={trial.config.get('seed')}: {int(r.get('epoch', -1)) + 1} epochs, "
              f"{self.objective}={r.get(self.objective, float('nan')):.4f} "
              f"gap={r.get('gap', float('nan')):.4f} "
              f"I(Y;Ŷ)={r.get('mi_y_yhat', float('nan')):.3f}",
              flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[{time.time() - self.t0:6.0f}s] {trial.trial_id} FAILED: "
              f"{trial_error_text(trial)}", flush=True)


class SaturationStopper(Stopper):
    """Ends a trial once ``I(Y;Ŷ)`` has saturated (the paper's §5.3); baselines run on."""

    def __init__(self, window: int = 3, rel_tol: float = 0.01, grad_tol: float | None = None,
                 min_epochs: int = 1) -> None:
        self.kw: dict[str, Any] = {"window": window, "rel_tol": rel_tol, "grad_tol": grad_tol}
        self.min_epochs = min_epochs
        self.history: dict[str, list[tuple[float, float]]] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if result.get("mistudy_baseline") or "mi_y_yhat" not in result:
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
        if trial.config.get("mistudy_baseline"):
            return TrialScheduler.CONTINUE
        return str(super().on_trial_result(tune_controller, trial, result))


def _merge_json(path: str, values: dict[str, Any]) -> None:
    import json

    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {}
    data.update(values)
    p.write_text(json.dumps(data, indent=2))
