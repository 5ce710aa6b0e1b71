"""Run, resume and sync a study: Ray Tune + the study searcher + MLflow in one folder.

Study folder (``--out DIR``)::

    DIR/study.json     study id, name, tracking URI, experiment
    DIR/spec.yaml      the spec as run (``--resume`` reads it)
    DIR/mlflow.db      default tracking store (SQLite); artifacts in DIR/mlartifacts
    DIR/optuna.db      the sampler's history
    DIR/ray/<name>/    Tune's experiment: per-trial results, checkpoints, searcher state
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainables._yaml import safe_load
from trainables.records import BASELINE_KEY

from ._sqlite import ensure_optuna_store
from .spec import StudySpec, parse_spec

__all__ = ["StudyPaths", "run_study", "sync_study", "StudyError", "open_study", "best_trials"]


class StudyError(RuntimeError):
    """A study-level problem for the user (exit code 2)."""


@dataclass(frozen=True)
class StudyPaths:
    root: Path

    @property
    def meta(self) -> Path:
        return self.root / "study.json"

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    @property
    def optuna(self) -> str:
        return f"sqlite:///{(self.root / 'optuna.db').resolve()}"

    def default_tracking_uri(self) -> str:
        return f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    def artifacts(self) -> str:
        return (self.root / "mlartifacts").resolve().as_uri()


def _redact(uri: str) -> str:
    """``http://user:secret@host`` -> ``http://***@host``: never print credentials."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def open_study(out: Path) -> tuple[dict[str, Any], StudySpec]:
    paths = StudyPaths(out)
    if not paths.meta.exists():
        raise StudyError(f"{out} is not a study folder (no study.json); run one with "
                         f"mistudy run SPEC --out {out}")
    meta = json.loads(paths.meta.read_text())
    spec = parse_spec(safe_load(paths.spec.read_text(encoding="utf-8"), str(paths.spec)))
    return meta, spec


def _check_tracking(uri: str) -> None:
    """Fail fast (exit 2, nothing started) when the tracking server cannot be reached."""
    if uri.startswith(("http://", "https://")):
        import base64
        import urllib.request

        from ._tracking import split_credentials

        bare, user, password = split_credentials(uri)
        request = urllib.request.Request(bare.rstrip("/") + "/health")
        if user is not None:  # credentials in the URI go in a header, never printed
            cred = f"{user}:{password}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(cred).decode())
        try:
            urllib.request.urlopen(request, timeout=5).read()
        except Exception as exc:
            raise StudyError(f"tracking URI {_redact(uri)} is unreachable "
                             f"({type(exc).__name__}); start the server or fix --tracking-uri"
                             ) from None


def _ray_environment(address: str | None) -> None:
    """Set before ray is first imported (Ray reads these at import time)."""
    if address is None:
        # A local Ray binds to loopback only (Ray resolves 127.0.0.1 to a routable address
        # unless its multi-node support is off, which a single local node does not need).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # JSON logger only
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False,
                              "include_dashboard": False}
    if os.environ.get("MISTUDY_WARM_WORKERS", "1") == "1":
        kwargs["runtime_env"] = {"worker_process_setup_hook": "trainables._warm.warm_imports"}
    if address is None:
        # "local": always a new local instance, never a cluster that `ray start` left running.
        ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    else:
        kwargs.pop("include_dashboard")
        ray.init(address=address, **kwargs)


def shutdown_ray() -> None:
    """Stop the local Ray this process started (or leave a cluster it joined)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _allow_pending_trials(cpus: float, gpus: float) -> None:
    """Tune starts one trial at a time when a searcher is used (one pending placement group);
    a trial's actor takes seconds to start, so slots sat idle. Allow one pending trial per
    slot the cluster has."""
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(_slots(cpus, gpus)))


def _slots(cpus: float, gpus: float) -> int:
    """Trials the cluster can run at once with these per-trial resources."""
    import ray

    res = ray.cluster_resources()
    slots = res.get("CPU", 1) / cpus
    if gpus > 0:
        slots = min(slots, res.get("GPU", 0) / gpus)
    return max(1, int(slots))


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _tracker(spec: StudySpec, paths: StudyPaths, meta: dict[str, Any]) -> Any:
    from ._tracking import Tracker

    return Tracker(meta["tracking_uri"], meta["experiment"], meta["study_id"],
                   meta.get("artifact_location"), spec.stopper, str(paths.timings))


def _build_tuner(spec: StudySpec, paths: StudyPaths, tracker: Any, cpus: float,
                 gpus: float) -> Any:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from trainables.ray_trainable import train_tune

    from ._callbacks import BaselineSafeASHA, MlflowCallback, ProgressCallback, SaturationStopper
    from ._searcher import StudySearcher

    obj = spec.objectives[0]
    searcher = StudySearcher(spec, paths.optuna, tracker.study_id)
    scheduler = None
    if spec.scheduler == "asha":
        scheduler = BaselineSafeASHA(metric=obj.metric, mode=obj.mode, time_attr="epochs_done",
                                     max_t=spec.fixed.get("epochs", 10), **spec.asha)
    stop = None
    if spec.stopper:
        stop = SaturationStopper(**spec.stopper)
    trainable = tune.with_resources(train_tune, {"cpu": cpus, "gpu": gpus})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=spec.num_trials,
            max_concurrent_trials=spec.max_concurrent, trial_dirname_creator=_trial_dirname,
            trial_name_creator=_trial_dirname,
            reuse_actors=True,  # no new process (torch import, data load) per trial
            metric=obj.metric if scheduler is None else None,
            mode=obj.mode if scheduler is None else None),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=str(paths.ray.resolve()), verbose=0, stop=stop,
            callbacks=[JsonLoggerCallback(), MlflowCallback(tracker),
                       ProgressCallback(obj.metric)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures)),
    )


def _new_meta(spec: StudySpec, paths: StudyPaths, tracking_uri: str | None) -> dict[str, Any]:
    return {
        "study_id": uuid.uuid4().hex[:12], "name": spec.name,
        "experiment": spec.name,
        "tracking_uri": tracking_uri or paths.default_tracking_uri(),
        "artifact_location": None if tracking_uri else paths.artifacts(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def run_study(spec: StudySpec | None, out: Path, *, resume: bool = False,
              address: str | None = None, tracking_uri: str | None = None,
              cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
              num_cpus: int | None = None) -> Any:
    """Run (or resume) a study; returns Tune's ResultGrid. Validation happens before Ray."""
    paths = StudyPaths(out)
    if resume:
        meta, spec = open_study(out)
        if tracking_uri and tracking_uri != meta["tracking_uri"]:
            raise StudyError("--tracking-uri differs from the study's; a resumed study keeps "
                             "logging where it started (see study.json)")
    else:
        assert spec is not None
        if paths.meta.exists():
            raise StudyError(f"{out} already holds a study; continue it with --resume, or "
                             f"choose a new --out")
        meta = _new_meta(spec, paths, tracking_uri)
    _check_tracking(meta["tracking_uri"])
    _ray_environment(address)
    cpus = cpus_per_trial if cpus_per_trial is not None else spec.cpus_per_trial
    gpus = gpus_per_trial if gpus_per_trial is not None else spec.gpus_per_trial
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        paths.spec.write_text(yaml.safe_dump(spec.raw, sort_keys=False), encoding="utf-8")
        paths.meta.write_text(json.dumps(meta, indent=2))
    from ray import tune

    from trainables.ray_trainable import train_tune

    t0 = time.time()
    tracker = _tracker(spec, paths, meta)
    # The stores (MLflow's schema and parent run, Optuna's schema: seconds, mostly imports
    # and migrations) are prepared while Ray starts its processes.
    def prepare_stores() -> None:
        tracker.parent_run(spec.raw)
        ensure_optuna_store(paths.optuna)

    with ThreadPoolExecutor(max_workers=1) as pool:
        stores = pool.submit(prepare_stores)
        _init_ray(address, num_cpus)
        t_ray = time.time()
        stores.result()  # re-raises what the thread raised
    _allow_pending_trials(cpus, gpus)
    exp_dir = (paths.ray / spec.name).resolve()
    saved = resume and any(exp_dir.glob("experiment_state-*.json"))
    if resume and not saved and exp_dir.exists():
        # Killed before Tune saved any state: nothing there can be resumed. Start the
        # experiment afresh; runs the killed attempt created are removed by the final sync.
        shutil.rmtree(exp_dir)
    if saved:
        for note in restore_deleted_checkpoints(exp_dir):
            _print(note)
        trainable = tune.with_resources(train_tune, {"cpu": cpus, "gpu": gpus})
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = _build_tuner(spec, paths, tracker, cpus, gpus)
    t_fit = time.time()
    grid = tuner.fit()
    t_sync = time.time()
    sync_study(out, grid=grid)
    tracker.finish_parent()
    record_timings(paths.timings, {
        "ray_start_seconds": t_ray - t0, "fit_seconds": t_sync - t_fit,
        "sync_seconds": time.time() - t_sync, "run_seconds": time.time() - t0,
        "slots": _slots(cpus, gpus), "ray_init_at": t0, "fit_at": t_fit,
        "run_end_at": time.time()})
    return grid


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
    from trainables.ray_trainable import STATE_FILE

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


def record_timings(path: Path | str, values: dict[str, Any]) -> None:
    """Merge ``values`` into the study's ``timings.json`` (the driver's overhead figures)."""
    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {}
    data.update(values)
    p.write_text(json.dumps(data, indent=2))


def _trial_table(grid: Any) -> list[dict[str, Any]]:
    rows = []
    for r in grid:
        if r.path is None:
            continue
        rows.append({"trial_id": Path(r.path).name, "config": r.config or {},
                     "path": Path(r.path), "error": r.error})
    return rows


def sync_study(out: Path, grid: Any = None) -> dict[str, int]:
    """Make the MLflow store match Tune's results exactly: one run per trial, every epoch
    once, artifacts and status; stray runs of trials Tune does not know are deleted."""
    from ray import tune

    from ._callbacks import trial_error_text
    from ._tracking import read_trial_results

    meta, spec = open_study(out)
    _check_tracking(meta["tracking_uri"])
    exp_dir = (StudyPaths(out).ray / spec.name).resolve()
    if grid is None:
        if not tune.Tuner.can_restore(str(exp_dir)):
            raise StudyError(f"no Tune experiment in {exp_dir}")
        grid = tune.ExperimentAnalysis(str(exp_dir))
        trials = [{"trial_id": t.trial_id, "config": t.config, "path": Path(t.path),
                   "error": t.status == "ERROR", "trial": t} for t in grid.trials]
    else:
        trials = _trial_table(grid)
    tracker = _tracker(spec, StudyPaths(out), meta)
    tracker.parent_run(spec.raw)
    known = {t["trial_id"] for t in trials}
    stray = {tid: rid for tid, rid in tracker.trial_runs().items() if tid not in known}
    for run_id in stray.values():
        tracker.client.delete_run(run_id)
    logged = 0
    for t in trials:
        records = read_trial_results(t["path"])
        if not records and not t["error"]:
            continue
        run_id = tracker.ensure_trial_run(t["trial_id"], t["config"])
        new = tracker.log_records(run_id, records)
        logged += new
        error = None
        if t["error"]:
            error = trial_error_text(t["trial"]) if "trial" in t else str(t["error"])[-4000:]
        status = "FAILED" if t["error"] else "FINISHED"
        run = tracker.client.get_run(run_id)
        if run.info.status != status or new:
            tracker.finish_trial(run_id, records, t["config"], status, error)
    return {"trials": len(trials), "epochs_logged": logged, "stray_runs_deleted": len(stray)}


def best_trials(grid: Any, spec: StudySpec, k: int = 5) -> list[dict[str, Any]]:
    """Top searched trials by the first objective (mean of its last ``last_k`` epochs)."""
    from ._searcher import objective_value
    from ._tracking import read_trial_results

    obj = spec.objectives[0]
    rows = []
    for t in _trial_table(grid):
        records = read_trial_results(t["path"])
        if not records or t["config"].get(BASELINE_KEY):
            continue
        rows.append({"trial_id": t["trial_id"], "config": t["config"],
                     "value": objective_value(records, obj.metric, spec.last_k),
                     "last": records[-1]})
    rows.sort(key=lambda r: r["value"], reverse=obj.mode == "max")
    return rows[:k]


def _print(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)
