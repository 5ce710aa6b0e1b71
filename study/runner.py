"""Run, resume, grow and sync a study: Ray Tune + the study searcher + MLflow in one folder
(layout: :mod:`study._folder`).

``run_study`` reads top to bottom: hold the folder's lock, settle the spec and where it logs
(validated before anything is written), start Ray and the stores side by side, fit the
interrupted experiment if any, fit the extension that grows the study if asked, sync MLflow
with Tune's results. A study grown with ``--resume --trials N`` gets one more Tune experiment
(``ray/<name>-more<k>``) whose searcher continues the same Optuna study: the sampler sees every
earlier trial, baselines are not run again, MLflow runs go under the same parent.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainables.records import BASELINE_KEY, tag

from ._folder import (
    StudyError,
    StudyPaths,
    check_tracking,
    new_meta,
    open_study,
    optuna_study_name,
    record_timings,
    tracking_uri_of,
    write_new_study,
    write_spec,
    writer_lock,
)
from ._ray import (
    allow_pending_trials,
    check_local_cpus,
    check_local_gpus,
    check_resources,
    init_ray,
    ray_environment,
    shutdown_ray,
    slots,
)
from ._resume import restore_deleted_checkpoints
from ._sqlite import ensure_optuna_store
from .spec import StudySpec, parse_spec

__all__ = ["StudyPaths", "run_study", "sync_study", "StudyError", "open_study", "best_trials",
           "experiment_dirs", "study_trials", "run_confirm", "confirm_info"]


def _more_dirs(paths: StudyPaths, spec: StudySpec) -> list[Path]:
    return sorted(paths.ray.glob(f"{spec.name}-more*"),
                  key=lambda p: int(p.name.rpartition("more")[2] or 0))


def experiment_dirs(paths: StudyPaths, spec: StudySpec) -> list[Path]:
    """The study's Tune experiments: the first, each extension in order, the confirmation."""
    from ._confirm import confirm_dir

    confirm = confirm_dir(paths, spec)
    return [(paths.ray / spec.name).resolve(), *(p.resolve() for p in _more_dirs(paths, spec)),
            *([confirm] if confirm.exists() else [])]


def _settle(spec: StudySpec | None, out: Path, resume: bool, tracking_uri: str | None,
            trials: int | None) -> tuple[dict[str, Any], StudySpec, StudySpec | None]:
    """(meta, spec as it stands, the grown spec or None) -- or StudyError, nothing written."""
    paths = StudyPaths(out)
    if not resume:
        assert spec is not None
        if paths.meta.exists():
            raise StudyError(f"{out} already holds a study; continue it with --resume, or "
                             f"choose a new --out")
        if trials is not None:
            raise StudyError("--trials changes a stored study; for a new study set trials "
                             "in the spec")
        return new_meta(spec, tracking_uri), spec, None
    meta, stored = open_study(out)
    if tracking_uri and tracking_uri != meta["tracking_uri"]:
        raise StudyError("--tracking-uri differs from the study's; a resumed study keeps "
                         "logging where it started (see study.json)")
    if spec is not None and spec.raw != stored.raw:
        raise StudyError("--resume takes the spec stored in the study folder; only --trials "
                         "may change it (start a new study for another spec)")
    if trials is None or trials == stored.trials:
        return meta, stored, None
    if trials < stored.trials:
        raise StudyError(f"--trials={trials}: the study already has {stored.trials} "
                         f"configurations; allowed: more than {stored.trials}")
    grown = parse_spec({**stored.raw, "trials": trials})
    return meta, stored, grown


def run_study(spec: StudySpec | None, out: Path, *, resume: bool = False,
              trials: int | None = None, address: str | None = None,
              tracking_uri: str | None = None, cpus_per_trial: float | None = None,
              gpus_per_trial: float | None = None, num_cpus: int | None = None,
              callbacks: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run, resume or grow a study; returns its trials (:func:`study_trials`)."""
    with writer_lock(out):
        meta, spec, grown = _settle(spec, out, resume, tracking_uri, trials)
        paths = StudyPaths(out)
        stored = dict(meta)
        meta["tracking_uri"], meta["artifact_location"] = tracking_uri_of(meta, out)
        check_tracking(meta["tracking_uri"])
        if address is None:  # a local Ray: its CPUs and GPUs are known before anything is
            check_local_cpus(spec.cpus_per_trial if cpus_per_trial is None else cpus_per_trial,
                             num_cpus)  # written
            check_local_gpus(spec.gpus_per_trial if gpus_per_trial is None else gpus_per_trial)
        if not resume:
            write_new_study(paths, spec, stored)
        cpus = cpus_per_trial if cpus_per_trial is not None else spec.cpus_per_trial
        gpus = gpus_per_trial if gpus_per_trial is not None else spec.gpus_per_trial
        t0 = time.time()
        tracker = _tracker(spec, paths, meta)
        _start(spec, paths, tracker, address, num_cpus, cpus, gpus)
        t_fit = time.time()
        fit = _fitter(spec, paths, tracker, cpus, gpus, callbacks or [])
        first = experiment_dirs(paths, spec)[0]
        if not resume or _unfinished(first):
            fit(first, spec, resume)
            _ended(out, first, tracker)
        if resume:
            _finish_extensions(paths, spec, fit, out, tracker)
            _fail_orphans(paths, optuna_study_name(meta))
            if grown is None and _asked(paths, optuna_study_name(meta)) < spec.trials:
                grown = spec  # a grow killed before its experiment was saved: grow again
        if grown is not None:
            _grow(paths, spec, grown, fit, optuna_study_name(meta))
            _ended(out, _more_dirs(paths, spec)[-1], tracker)
            spec = grown
        t_sync = time.time()
        sync_study(out, locked=True)
        tracker.finish_parent()
        record_timings(paths.timings, {
            "ray_start_seconds": t_fit - t0, "fit_seconds": t_sync - t_fit,
            "sync_seconds": time.time() - t_sync, "run_seconds": time.time() - t0,
            "slots": slots(cpus, gpus), "ray_init_at": t0, "fit_at": t_fit,
            "run_end_at": time.time()})
        return study_trials(out)


def _start(spec: StudySpec, paths: StudyPaths, tracker: Any, address: str | None,
           num_cpus: int | None, cpus: float, gpus: float) -> None:
    """Ray starts while the stores are prepared (MLflow's schema and parent run, Optuna's
    schema: seconds, mostly imports and migrations)."""
    from ._lifecycle import end_previous_ray, install_stop_signals, record_ray_processes

    ray_environment(address)
    if address is None:
        for pid in end_previous_ray(paths.root):
            _print(f"ended process {pid} of this folder's previous local Ray")

    def prepare_stores() -> None:
        tracker.parent_run(spec.raw)
        ensure_optuna_store(paths.optuna)

    with _deferred_interrupt() as interrupted:
        with ThreadPoolExecutor(max_workers=1) as pool:
            stores = pool.submit(prepare_stores)
            init_ray(address, num_cpus)
            stores.result()  # re-raises what the thread raised
    if interrupted():
        shutdown_ray()
        raise KeyboardInterrupt
    if address is None:
        record_ray_processes(paths.root)
    if threading.current_thread() is threading.main_thread():
        install_stop_signals()  # after Ray's start: SIGTERM/SIGHUP stop like Ctrl-C
    check_resources(cpus, gpus)
    allow_pending_trials(cpus, gpus)


@contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Ctrl-C while Ray starts is acted on once the start returns (a second Ctrl-C at once).
    Raised as it lands, the KeyboardInterrupt can hit logging's after-fork lock release, where
    Python ignores it: the interrupt is lost and the logging lock stays held, so the thread
    preparing the stores blocks on its next logger forever (seen under load)."""
    hits: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        hits.append(signum)
        if len(hits) > 1:
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, old)


def _unfinished(exp_dir: Path) -> bool:
    """Whether Tune's experiment has trials left (or was never saved: then it starts over)."""
    from ray import tune

    if not any(exp_dir.glob("experiment_state-*.json")):
        return True
    analysis = tune.ExperimentAnalysis(str(exp_dir))
    return any(t.status not in ("TERMINATED", "ERROR") for t in analysis.trials) or \
        len(analysis.trials) == 0


def _fitter(spec: StudySpec, paths: StudyPaths, tracker: Any, cpus: float, gpus: float,
            callbacks: list[Any]) -> Callable[[Path, StudySpec, bool], None]:
    def fit(exp_dir: Path, exp_spec: StudySpec, resume: bool, **searcher: Any) -> None:
        from ray import tune

        saved = resume and any(exp_dir.glob("experiment_state-*.json"))
        if resume and not saved and exp_dir.exists():
            # Killed before Tune saved any state: nothing there can be resumed. Start the
            # experiment afresh; runs the killed attempt created are removed by the sync.
            shutil.rmtree(exp_dir)
        if saved:
            for note in restore_deleted_checkpoints(exp_dir):
                _print(note)
            tuner = tune.Tuner.restore(str(exp_dir), _trainable(cpus, gpus),
                                       resume_unfinished=True, resume_errored=True)
        else:
            tuner = _build_tuner(exp_spec, exp_dir, paths, tracker, cpus, gpus, callbacks,
                                 **searcher)
        tuner.fit()
    return fit  # type: ignore[return-value]


def _ended(out: Path, exp_dir: Path, tracker: Any) -> None:
    """After ``fit`` returned: a study stopped by a signal (Tune saved its state and returned
    with trials unfinished) is synced -- finished epochs logged, unfinished runs KILLED -- and
    reported as interrupted; the parent run is KILLED, never FINISHED."""
    from ._lifecycle import StudyInterrupted, stop_signal

    if stop_signal() is None and not _unfinished(exp_dir):
        return
    sync_study(out, locked=True)
    tracker.finish_parent("KILLED")
    raise StudyInterrupted(f"interrupted; the study's state is saved -- continue with: "
                           f"mistudy run --resume --out {out}")


def _finish_extensions(paths: StudyPaths, spec: StudySpec, fit: Callable, out: Path,
                       tracker: Any) -> None:
    """``--resume`` finishes every extension a kill left unfinished (Tune restores each with
    its searcher); one killed before Tune saved anything is removed and grown again."""
    for exp_dir in _more_dirs(paths, spec):
        if not _unfinished(exp_dir):
            continue
        if any(exp_dir.glob("experiment_state-*.json")):
            fit(exp_dir.resolve(), spec, True)
            _ended(out, exp_dir, tracker)
        else:
            shutil.rmtree(exp_dir)


def _asked(paths: StudyPaths, optuna_name: str) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return len(optuna.load_study(study_name=optuna_name, storage=paths.optuna).trials)
    except KeyError:
        return 0


def _fail_orphans(paths: StudyPaths, optuna_name: str) -> None:
    """Optuna trials still RUNNING once every experiment has finished were asked by a
    searcher whose experiment was killed before Tune saved it: no trial will ever tell them.
    They are told FAIL (with the reason as a user attribute), never left RUNNING."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=optuna_name, storage=paths.optuna)
    except KeyError:
        return
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason",
                                           "its experiment was killed before Tune saved it")
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def _grow(paths: StudyPaths, spec: StudySpec, grown: StudySpec, fit: Callable,
          optuna_name: str) -> None:
    """One more experiment for the configurations ``grown`` adds; its searcher continues the
    stored Optuna study (``asked`` counts the ones sampled before, baselines already ran: their
    records come from the earlier experiments, for the closure objective)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    asked = len(optuna.load_study(study_name=optuna_name, storage=paths.optuna).trials)
    k = len(_more_dirs(paths, spec)) + 1
    exp_dir = (paths.ray / f"{spec.name}-more{k}").resolve()
    base = baseline_records(paths.root)
    write_spec(paths, grown)  # the spec now says N; a kill from here resumes the extension
    fit(exp_dir, grown, False, asked=asked, baselines=False, baseline_records=base)


def baseline_records(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Match key -> records of every finished baseline of the study (failed: None)."""
    from ._searcher import _kept, _key
    from ._tracking import read_trial_results

    found: dict[str, list[dict[str, Any]] | None] = {}
    for t in study_trials(out):
        if t["config"].get(BASELINE_KEY) and t["status"] in ("TERMINATED", "ERROR"):
            records = read_trial_results(t["path"])
            found[_key(t["config"])] = None if t["error"] or not records else [
                _kept(r) for r in records]
    return found  # type: ignore[return-value]


def _trainable(cpus: float, gpus: float) -> Any:
    from ray import tune

    from trainables.ray_trainable import train_tune

    return tune.with_resources(train_tune, {"cpu": cpus, "gpu": gpus})


def _tracker(spec: StudySpec, paths: StudyPaths, meta: dict[str, Any]) -> Any:
    from ._tracking import Tracker

    return Tracker(meta["tracking_uri"], meta["experiment"], meta["study_id"],
                   meta.get("artifact_location"), spec.stopper, str(paths.timings),
                   last_k=spec.last_k)


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _build_tuner(spec: StudySpec, exp_dir: Path, paths: StudyPaths, tracker: Any, cpus: float,
                 gpus: float, callbacks: list[Any], asked: int = 0,
                 baselines: bool = True,
                 baseline_records: dict[str, Any] | None = None) -> Any:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from ._callbacks import BaselineSafeASHA, MlflowCallback, SaturationStopper
    from ._searcher import StudySearcher

    metric, mode = spec.objectives[0].record_metric  # a relative objective's per-epoch source
    meta, _ = open_study(paths.root)
    searcher = StudySearcher(spec, paths.optuna, optuna_study_name(meta), asked=asked,
                             baselines=baselines, baseline_records=baseline_records,
                             tracker=tracker)
    scheduler = None
    if spec.scheduler == "asha":
        scheduler = BaselineSafeASHA(metric=metric, mode=mode, time_attr="epochs_done",
                                     max_t=spec.fixed.get("epochs", 10), **spec.asha)
    stop = SaturationStopper(**spec.stopper) if spec.stopper else None
    samples = (spec.trials - asked) * len(spec.seeds) + (spec.num_baselines if baselines else 0)
    return tune.Tuner(
        _trainable(cpus, gpus),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=samples,
            max_concurrent_trials=spec.max_concurrent, trial_dirname_creator=_trial_dirname,
            trial_name_creator=_trial_dirname,
            reuse_actors=True,  # no new process (torch import, data load) per trial
            metric=metric if scheduler is None else None,
            mode=mode if scheduler is None else None),
        run_config=tune.RunConfig(
            name=exp_dir.name, storage_path=str(exp_dir.parent), verbose=0, stop=stop,
            callbacks=[JsonLoggerCallback(), MlflowCallback(tracker), *callbacks],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures)),
    )


def run_confirm(out: Path, top: int | None = None, seeds: int | None = None,
                num_cpus: int | None = None, callbacks: list[Any] | None = None) -> Any:
    """``mistudy confirm``: plan (or resume the stored plan), run the confirmation phase, sync
    MLflow, and return the confirmation table (``analysis.ConfirmInfo``)."""
    from ._confirm import confirm_dir, load_or_plan

    with writer_lock(out):
        meta, spec = open_study(out)
        paths = StudyPaths(out)
        meta["tracking_uri"], meta["artifact_location"] = tracking_uri_of(meta, out)
        check_tracking(meta["tracking_uri"])
        check_local_cpus(spec.cpus_per_trial, num_cpus)
        check_local_gpus(spec.gpus_per_trial)
        plan = load_or_plan(out, top, seeds)
        tracker = _tracker(spec, paths, meta)
        exp_dir = confirm_dir(paths, spec)
        if _unfinished(exp_dir):
            _start(spec, paths, tracker, None, num_cpus, spec.cpus_per_trial,
                   spec.gpus_per_trial)
            _fit_list(exp_dir, plan["configs"], spec, tracker, callbacks or [])
            _ended(out, exp_dir, tracker)
        sync_study(out, locked=True)
        return confirm_info(out, plan, tracker)


def _fit_list(exp_dir: Path, configs: list[dict[str, Any]], spec: StudySpec, tracker: Any,
              callbacks: list[Any]) -> None:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from ._callbacks import MlflowCallback
    from ._confirm import ListSearcher

    cpus, gpus = spec.cpus_per_trial, spec.gpus_per_trial
    if any(exp_dir.glob("experiment_state-*.json")):
        tuner = tune.Tuner.restore(str(exp_dir), _trainable(cpus, gpus),
                                   resume_unfinished=True, resume_errored=True)
    else:
        if exp_dir.exists():
            shutil.rmtree(exp_dir)  # killed before Tune saved anything: start it afresh
        tuner = tune.Tuner(
            _trainable(cpus, gpus),
            tune_config=tune.TuneConfig(
                search_alg=ListSearcher(configs), num_samples=len(configs),
                trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname,
                reuse_actors=True),
            run_config=tune.RunConfig(
                name=exp_dir.name, storage_path=str(exp_dir.parent), verbose=0,
                callbacks=[JsonLoggerCallback(), MlflowCallback(tracker), *callbacks],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures)))
    tuner.fit()


def confirm_info(out: Path, plan: dict[str, Any], tracker: Any = None) -> Any:
    """The confirmation table from the study's records (``analysis.confirmation``); written
    to ``confirm.md`` and, with a tracker, to the parent run."""
    from analysis import confirmation, format_confirm
    from trainables.records import atomic_write_text

    info = confirmation(str(out))
    if info is None:
        raise StudyError(f"{out}: the confirmation runs have no finished trials")
    text = format_confirm(info)
    atomic_write_text(StudyPaths(out).root / "confirm.md", "```\n" + text + "\n```\n")
    if tracker is not None:
        parent = tracker.parent_run()
        tracker.client.log_text(parent, info.table.to_csv(index=False), "confirm.csv")
        tracker.client.log_text(parent, text, "confirm.txt")
    return info


def study_trials(out: Path) -> list[dict[str, Any]]:
    """Every trial of every experiment of the study: trial_id, config, path, error, status."""
    from ray import tune

    _, spec = open_study(out)
    rows = []
    for exp_dir in experiment_dirs(StudyPaths(out), spec):
        if not tune.Tuner.can_restore(str(exp_dir)):
            continue
        for t in tune.ExperimentAnalysis(str(exp_dir)).trials:
            rows.append({"trial_id": t.trial_id, "config": t.config, "path": Path(str(t.path)),
                         "error": t.status == "ERROR", "status": t.status, "trial": t})
    return rows


def sync_study(out: Path, locked: bool = False) -> dict[str, int]:
    """Make the MLflow store match Tune's results exactly: one run per trial, every epoch
    once, artifacts, status and summary metrics; stray runs of trials Tune does not know are
    deleted. Takes the folder's lock unless the caller holds it."""
    if not locked:
        with writer_lock(out):
            return sync_study(out, locked=True)
    from ._callbacks import trial_error_text
    from ._tracking import read_trial_results

    meta, spec = open_study(out)
    check_tracking(meta["tracking_uri"])
    trials = study_trials(out)
    if not trials and not StudyPaths(out).ray.exists():
        raise StudyError(f"no Tune experiment in {StudyPaths(out).ray}")
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
        error = trial_error_text(t["trial"]) if t["error"] else None
        # a trial a stop left unfinished is KILLED (resumable), never FINISHED
        status = "FAILED" if t["error"] else \
            "FINISHED" if t["status"] == "TERMINATED" else "KILLED"
        run = tracker.client.get_run(run_id)
        if run.info.status != status or new or "final_gap" not in run.data.metrics:
            tracker.finish_trial(run_id, records, t["config"], status, error,
                                 trial_dir=t["path"])
    _backfill_ranking(out, tracker)
    return {"trials": len(trials), "epochs_logged": logged, "stray_runs_deleted": len(stray)}


def _backfill_ranking(out: Path, tracker: Any) -> None:
    """Gap closure on every searched trial run that has matched baselines (the ranking's
    numbers, with the study's last_k and saturation settings), and the ranking on the parent
    run: ``ranking.csv``/``ranking.md`` and the best schedule's closure as metrics."""
    from mlflow.entities import Metric

    from analysis import AnalysisError, analyze, log_ranking

    try:
        a = analyze(str(out))
    except AnalysisError:
        return  # nothing to rank yet (no finished trials, or only baselines)
    now = int(time.time() * 1000)
    keys = ("val_closure", "test_closure", "val_gap_reduction", "test_gap_reduction",
            "val_acc_delta", "test_acc_delta")
    for row in a.matched.to_dict("records"):
        metrics = [Metric(k, float(row[k]), now, 0) for k in keys if row[k] == row[k]]
        if row["test_closure"] == row["test_closure"]:  # not NaN; the UI's sort column
            metrics.append(Metric("gap_closure", float(row["test_closure"]), now, 0))
        if metrics:
            tracker.client.log_batch(row["run_id"], metrics=metrics)
    log_ranking(a)
    best = a.ranking.dropna(subset=[a.selection.metric]).head(1)
    if a.data.parent_run_id and not best.empty:
        top = best.iloc[0]
        tracker.client.log_batch(a.data.parent_run_id, metrics=[
            Metric(f"best_{k}", float(top[k]), now, 0)
            for k in ("val_closure", "test_closure", "delta_val_acc", "delta_test_acc")
            if top[k] == top[k]])
        tracker.client.set_tag(a.data.parent_run_id, "best_schedule", str(top.schedule))
        tracker.client.set_tag(a.data.parent_run_id, tag("selected_by"),
                               f"{a.selection.metric} on validation")


def best_trials(out: Path, k: int = 5) -> list[dict[str, Any]]:
    """The configurations Optuna was told, best first by the first objective, feasible ones
    (guards) before infeasible: the search's own rule, which the ranking shares."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    meta, spec = open_study(out)
    try:
        study = optuna.load_study(study_name=optuna_study_name(meta),
                                  storage=StudyPaths(out).optuna)
    except KeyError:
        return []
    obj = spec.objectives[0]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    sign = -1.0 if obj.mode == "max" else 1.0
    done.sort(key=lambda t: (not t.user_attrs.get("feasible", True), sign * t.values[0]))
    return [{"number": t.number, "params": t.params, "value": t.values[0],
             "feasible": t.user_attrs.get("feasible", True), "attrs": t.user_attrs}
            for t in done[:k]]


def _print(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)
