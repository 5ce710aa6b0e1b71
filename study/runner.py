"""A study's lifecycle: run, resume, grow, confirm -- Ray Tune + the study searcher + MLflow in
one folder (layout: :mod:`study._folder`; Tune wiring: :mod:`study._tune`; MLflow sync and
summaries: :mod:`study._sync`).

``run_study`` reads top to bottom: hold the folder's lock, settle the spec and where it logs
(validated before anything is written), start Ray and the stores side by side, fit the
interrupted experiment if any, fit the extension that grows the study if asked, sync MLflow
with Tune's results. A study grown with ``--resume --trials N`` gets one more Tune experiment
(``ray/<name>-more<k>``) whose searcher continues the same Optuna study: the sampler sees every
earlier trial, baselines are not run again, MLflow runs go under the same parent.
"""

from __future__ import annotations

import shlex
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

from ._experiments import unfinished
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
from ._resume import repair_torn_state
from ._sqlite import ensure_optuna_store
from ._sync import baseline_records, best_trials, confirm_info, sync_study
from ._tune import (
    build_tuner,
    experiment_dirs,
    fit_list,
    more_dirs,
    restore_tuner,
    study_tracker,
    study_trials,
)
from .spec import StudySpec, parse_spec

__all__ = ["StudyPaths", "run_study", "sync_study", "StudyError", "open_study", "best_trials",
           "experiment_dirs", "study_trials", "run_confirm", "confirm_info"]

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
        tracker = study_tracker(spec, paths, meta)
        _start(spec, paths, tracker, address, num_cpus, cpus, gpus)
        t_fit = time.time()
        fit = _fitter(spec, paths, tracker, cpus, gpus, callbacks or [])
        dirs = experiment_dirs(paths, spec)
        for exp_dir in dirs if resume else []:
            for note in repair_torn_state(exp_dir):  # before anything reads a saved state
                _print(note)
        first = dirs[0]
        if not resume or unfinished(first):
            fit(first, spec, resume)
            _ended(out, first, tracker)
        if resume:
            _finish_extensions(paths, spec, fit, out, tracker)
            _fail_orphans(paths, optuna_study_name(meta))
            if grown is None and _asked(paths, optuna_study_name(meta)) < spec.trials:
                grown = spec  # a grow killed before its experiment was saved: grow again
        if grown is not None:
            _grow(paths, spec, grown, fit, optuna_study_name(meta))
            _ended(out, more_dirs(paths, spec)[-1], tracker)
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


def _fitter(spec: StudySpec, paths: StudyPaths, tracker: Any, cpus: float, gpus: float,
            callbacks: list[Any]) -> Callable[[Path, StudySpec, bool], None]:
    def fit(exp_dir: Path, exp_spec: StudySpec, resume: bool, **searcher: Any) -> None:
        saved = resume and any(exp_dir.glob("experiment_state-*.json"))
        if resume and not saved and exp_dir.exists():
            # Killed before Tune saved any state: nothing there can be resumed. Start the
            # experiment afresh; runs the killed attempt created are removed by the sync.
            shutil.rmtree(exp_dir)
        if saved:
            tuner = restore_tuner(exp_dir, cpus, gpus)
        else:
            tuner = build_tuner(exp_spec, exp_dir, paths, tracker, cpus, gpus, callbacks,
                                 **searcher)
        tuner.fit()
    return fit  # type: ignore[return-value]


def _ended(out: Path, exp_dir: Path, tracker: Any, resume_with: str | None = None) -> None:
    """After ``fit`` returned: a study stopped by a signal (Tune saved its state and returned
    with trials unfinished) is synced -- finished epochs logged, unfinished runs KILLED -- and
    reported as interrupted, with the command that continues it; the parent run is KILLED,
    never FINISHED."""
    import shlex

    from ._lifecycle import StudyInterrupted, stop_signal

    if stop_signal() is None and not unfinished(exp_dir):
        return
    sync_study(out, locked=True)
    tracker.finish_parent("KILLED")
    again = resume_with or f"mistudy run --resume --out {shlex.quote(str(out))}"
    raise StudyInterrupted(f"interrupted; the study's state is saved -- continue with: "
                           f"{again}")


def _finish_extensions(paths: StudyPaths, spec: StudySpec, fit: Callable, out: Path,
                       tracker: Any) -> None:
    """``--resume`` finishes every extension a kill left unfinished (Tune restores each with
    its searcher); one killed before Tune saved anything is removed and grown again."""
    for exp_dir in more_dirs(paths, spec):
        if not unfinished(exp_dir):
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
    k = len(more_dirs(paths, spec)) + 1
    exp_dir = (paths.ray / f"{spec.name}-more{k}").resolve()
    base = baseline_records(paths.root)
    write_spec(paths, grown)  # the spec now says N; a kill from here resumes the extension
    fit(exp_dir, grown, False, asked=asked, baselines=False, baseline_records=base)


def run_confirm(out: Path, top: int | None = None, seeds: int | None = None,
                num_cpus: int | None = None, callbacks: list[Any] | None = None,
                data_seeds: list[int] | None = None, same_split: bool = False) -> Any:
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
        plan = load_or_plan(out, top, seeds, data_seeds, same_split)
        for cb in callbacks or []:  # a progress display counts the runs the plan holds
            if hasattr(cb, "total"):
                cb.total = len(plan["configs"])
        tracker = study_tracker(spec, paths, meta)
        exp_dir = confirm_dir(paths, spec)
        for note in repair_torn_state(exp_dir):
            _print(note)
        if unfinished(exp_dir):
            _start(spec, paths, tracker, None, num_cpus, spec.cpus_per_trial,
                   spec.gpus_per_trial)
            fit_list(exp_dir, plan["configs"], spec, tracker, callbacks or [])
            _ended(out, exp_dir, tracker, f"mistudy confirm {shlex.quote(str(out))}")
        sync_study(out, locked=True)
        tracker.finish_parent()  # an earlier interrupted phase left it KILLED
        return confirm_info(out, plan, tracker)


def _print(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)
