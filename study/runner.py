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
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from trainables.studyfolder import StudyPaths, tracking_uri_of

from ._experiments import (
    confirm_dir,
    discard_unsaved,
    experiment_dirs,
    first_dir,
    more_dirs,
    next_more_dir,
    study_trials,
    unfinished,
)
from ._folder import (
    Location,
    Study,
    StudyError,
    check_tracking,
    new_meta,
    open_study,
    record_timings,
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
from ._resume import repair
from ._sqlite import ensure_optuna_store
from ._sync import baseline_records, confirm_info, reconcile
from ._tracking import Tracker, study_tracker
from ._tune import build_tuner, fit_list, restore_tuner
from .spec import StudySpec, parse_spec

__all__ = ["run_study", "run_confirm", "StudyRun"]


class StudyRun(NamedTuple):
    """What ``run_study`` hands back to its command: the trials, the study as it was opened
    (and grown), and the ranking its final sync computed (None: nothing to rank yet)."""

    trials: list[dict[str, Any]]
    study: Study
    analysis: Any

def _settle(spec: StudySpec | None, paths: StudyPaths, resume: bool,
            tracking_uri: str | None, trials: int | None
            ) -> tuple[Study, StudySpec | None, dict[str, Any] | None]:
    """(the study -- opened, or new with its tracking URI resolved --, the grown spec or
    None, a new study's meta to write or None) -- or StudyError, nothing written."""
    out = paths.root
    if not resume:
        assert spec is not None
        if paths.meta.exists():
            raise StudyError(f"{out} already holds a study; continue it with --resume, or "
                             f"choose a new --out")
        if trials is not None:
            raise StudyError("--trials changes a stored study; for a new study set trials "
                             "in the spec")
        meta = new_meta(spec, tracking_uri)
        resolved = dict(zip(("tracking_uri", "artifact_location"),
                            tracking_uri_of(meta, out), strict=True))
        return Study(paths, {**meta, **resolved}, spec), None, meta
    study = open_study(paths)
    stored = study.spec
    if tracking_uri and tracking_uri != study.meta["tracking_uri"]:
        raise StudyError("--tracking-uri differs from the study's; a resumed study keeps "
                         "logging where it started (see study.json)")
    if spec is not None and spec.raw != stored.raw:
        raise StudyError("--resume takes the spec stored in the study folder; only --trials "
                         "may change it (start a new study for another spec)")
    if trials is None or trials == stored.trials:
        return study, None, None
    if trials < stored.trials:
        raise StudyError(f"--trials={trials}: the study already has {stored.trials} "
                         f"configurations; allowed: more than {stored.trials}")
    return study, parse_spec({**stored.raw, "trials": trials}), None


def lag_note(spec: StudySpec, n_slots: int) -> str | None:
    """A line when the ordered search keeps slots idle: at most ``sampler_lag``
    configurations (times their seeds) run at once. None when the lag fills the slots."""
    lag = spec.sampler_lag
    if lag is None or lag * len(spec.seeds) >= n_slots:
        return None
    want = -(-n_slots // len(spec.seeds)) + 1
    return (f"note: sampler_lag {lag} runs at most {lag} configurations ({lag * len(spec.seeds)}"
            f" trials) at once, and this cluster has {n_slots} slots: set sampler_lag: {want} "
            "in the spec to fill them (the search stays repeatable; a larger lag samples from "
            "fewer told results), or sampler_lag: async (not repeatable)")


def _lag_note(spec: StudySpec, n_slots: int) -> None:
    note = lag_note(spec, n_slots)
    if note:
        _print(note)


def _check_decisions(paths: StudyPaths, optuna_name: str) -> None:
    """The closure pruner's ``pruning.json`` as a resume finds it: a link or special file is
    refused in one line; a damaged or deleted one is said in one line and its pruned
    configurations rebuilt from Optuna's PRUNED trials (epoch and score from each trial's
    last intermediate value), so nothing pruned trains on."""
    import json

    import optuna

    from trainables.fileio import UnreadableFile, atomic_write_text
    from trainables.pruning import DecisionsError, read_decisions

    from ._searcher import stored_study

    try:
        read_decisions(paths.pruning, missing_ok=False)
        return
    except DecisionsError as exc:
        problem = str(exc)
    except UnreadableFile as exc:
        raise StudyError(str(exc)) from None
    study = stored_study(paths.optuna, optuna_name)
    pruned = [] if study is None else study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    if not pruned and not paths.pruning.exists():
        return  # nothing was decided yet
    decisions: dict[str, Any] = {"pruned": {}, "reached": {}, "passed": {}}
    for t in pruned:
        step = max(t.intermediate_values) if t.intermediate_values else 0
        decisions["pruned"][str(t.number)] = [
            step, "rebuilt from optuna.db", t.intermediate_values.get(step)]
    atomic_write_text(paths.pruning, json.dumps(decisions, indent=1))
    print(f"mistudy: {problem}; rebuilt {len(pruned)} pruned configurations from optuna.db "
          "(the median rule's earlier values start anew)", flush=True)


def run_study(spec: StudySpec | None, paths: StudyPaths, *, resume: bool = False,
              trials: int | None = None, address: str | None = None,
              tracking_uri: str | None = None, cpus_per_trial: float | None = None,
              gpus_per_trial: float | None = None, num_cpus: int | None = None,
              callbacks: list[Any] | None = None) -> StudyRun:
    """Run, resume or grow a study; returns its trials (:func:`study_trials`), the study and
    its ranking."""
    with writer_lock(paths):
        study, grown, new = _settle(spec, paths, resume, tracking_uri, trials)
        spec = study.spec
        _plan_progress(callbacks, spec.num_trials if grown is None else
                       (grown.trials - spec.trials) * len(spec.seeds), spec)
        check_tracking(study.meta["tracking_uri"])
        if address is None:  # a local Ray: its CPUs and GPUs are known before anything is
            check_local_cpus(spec.cpus_per_trial if cpus_per_trial is None else cpus_per_trial,
                             num_cpus)  # written
            check_local_gpus(spec.gpus_per_trial if gpus_per_trial is None else gpus_per_trial)
        if new is not None:
            write_new_study(paths, spec, new)
        elif spec.scheduler == "closure":  # before Ray: a FIFO would hang Tune's scheduler
            _check_decisions(paths, study.optuna_name)
        cpus = cpus_per_trial if cpus_per_trial is not None else spec.cpus_per_trial
        gpus = gpus_per_trial if gpus_per_trial is not None else spec.gpus_per_trial
        t0 = time.time()
        tracker = study_tracker(study)
        _start(spec, paths, tracker, address, num_cpus, cpus, gpus)
        _lag_note(spec, slots(cpus, gpus))
        t_fit = time.time()
        run = _Run(paths, study.optuna_name, tracker, cpus, gpus, callbacks or [],
                   study.where)
        if resume:  # before anything reads or restores a saved state
            _notes(repair(experiment_dirs(paths, spec.name), run.where))
        first = first_dir(paths, spec.name)
        if not resume or unfinished(first):
            _fit(run, first, spec, resume)
            _ended(study, first, tracker, spec)
        if resume:
            _finish_extensions(run, study)
            _fail_orphans(paths, run.optuna_name)
            if grown is None and _asked(paths, run.optuna_name) < spec.trials:
                grown = spec  # a grow killed before its experiment was saved: grow again
        if grown is not None:
            exp_dir = _grow(run, spec, grown)
            _ended(study, exp_dir, tracker, grown)
            spec = grown
        t_sync = time.time()
        _, _, analysis = reconcile(study, spec, tracker)
        tracker.finish_parent()
        record_timings(paths.timings, {
            "ray_start_seconds": t_fit - t0, "fit_seconds": t_sync - t_fit,
            "sync_seconds": time.time() - t_sync, "run_seconds": time.time() - t0,
            "slots": slots(cpus, gpus), "ray_init_at": t0, "fit_at": t_fit,
            "run_end_at": time.time()})
        return StudyRun(study_trials(paths, spec.name), study._replace(spec=spec), analysis)


def _start(spec: StudySpec, paths: StudyPaths, tracker: Tracker, address: str | None,
           num_cpus: int | None, cpus: float, gpus: float) -> None:
    """Ray starts while the stores are prepared (MLflow's schema and parent run, Optuna's
    schema: seconds, mostly imports and migrations)."""
    from ._lifecycle import end_previous_ray, install_stop_signals, record_ray_processes

    ray_environment(address)
    if address is None:
        for pid in end_previous_ray(paths):
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
        record_ray_processes(paths)
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


class _Run(NamedTuple):
    """What every fit of one command shares: the folder, the Optuna study's name, the
    tracker, each trial's resources, the callbacks."""
    paths: StudyPaths
    optuna_name: str
    tracker: Tracker
    cpus: float
    gpus: float
    callbacks: list[Any]
    where: Location  # the folder as this command found it: what restored objects are handed


def _fit(run: _Run, exp_dir: Path, exp_spec: StudySpec, resume: bool, **searcher: Any) -> None:
    """Fit one experiment: restored from Tune's saved state when resuming one that has it,
    else built new (an experiment killed before Tune saved anything starts afresh)."""
    if resume and discard_unsaved(exp_dir):
        tuner = restore_tuner(exp_dir, run.cpus, run.gpus, run.where)
    else:
        tuner = build_tuner(exp_spec, exp_dir, run.paths, run.where, run.tracker,
                            run.cpus, run.gpus, run.callbacks, **searcher)
    tuner.fit()


def _ended(study: Study, exp_dir: Path, tracker: Tracker, spec: StudySpec,
           resume_with: str | None = None) -> None:
    """After ``fit`` returned: a study stopped by a signal (Tune saved its state and returned
    with trials unfinished) is synced -- finished epochs logged, unfinished runs KILLED -- and
    reported as interrupted, with the command that continues it; the parent run is KILLED,
    never FINISHED."""
    import shlex

    from ._lifecycle import StudyInterrupted, stop_signal

    if stop_signal() is None and not unfinished(exp_dir):
        return
    reconcile(study, spec, tracker)
    tracker.finish_parent("KILLED")
    again = resume_with or f"mistudy run --resume --out {shlex.quote(str(study.paths.root))}"
    raise StudyInterrupted(f"interrupted; the study's state is saved -- continue with: "
                           f"{again}")


def _finish_extensions(run: _Run, study: Study) -> None:
    """``--resume`` finishes every extension a kill left unfinished (Tune restores each with
    its searcher); one killed before Tune saved anything is removed and grown again."""
    for exp_dir in more_dirs(run.paths, study.spec.name):
        if unfinished(exp_dir) and discard_unsaved(exp_dir):
            _fit(run, exp_dir, study.spec, True)
            _ended(study, exp_dir, run.tracker, study.spec)


def _asked(paths: StudyPaths, optuna_name: str) -> int:
    from ._searcher import stored_study

    study = stored_study(paths.optuna, optuna_name)
    return 0 if study is None else len(study.trials)


def _fail_orphans(paths: StudyPaths, optuna_name: str) -> None:
    """Optuna trials still RUNNING once every experiment has finished were asked by a
    searcher whose experiment was killed before Tune saved it: no trial will ever tell them.
    They are told FAIL (with the reason as a user attribute), never left RUNNING."""
    import optuna

    from ._searcher import reopen_trial, stored_study

    study = stored_study(paths.optuna, optuna_name)
    if study is None:
        return
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        reopen_trial(study, t.number).set_user_attr(
            "fail_reason", "its experiment was killed before Tune saved it")
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def _grow(run: _Run, spec: StudySpec, grown: StudySpec) -> Path:
    """One more experiment for the configurations ``grown`` adds; its searcher continues the
    stored Optuna study (``asked`` counts the ones sampled before, baselines already ran: their
    records come from the earlier experiments, for the closure objective). Returns its
    folder."""
    asked = _asked(run.paths, run.optuna_name)
    exp_dir = next_more_dir(run.paths, spec.name)
    base = baseline_records(study_trials(run.paths, spec.name))
    write_spec(run.paths, grown)  # the spec now says N; a kill from here resumes the extension
    _fit(run, exp_dir, grown, False, asked=asked, baselines=False, baseline_records=base)
    return exp_dir


def run_confirm(paths: StudyPaths, top: int | None = None, seeds: int | None = None,
                num_cpus: int | None = None, callbacks: list[Any] | None = None,
                data_seeds: list[int] | None = None, same_split: bool = False) -> Any:
    """``mistudy confirm``: plan (or resume the stored plan), run the confirmation phase, sync
    MLflow, and return the confirmation table (``analysis.ConfirmInfo``)."""
    from ._confirm import load_or_plan

    with writer_lock(paths):
        study = open_study(paths)  # its tracking URI resolved for where the folder is
        spec = study.spec
        check_tracking(study.meta["tracking_uri"])
        check_local_cpus(spec.cpus_per_trial, num_cpus)
        check_local_gpus(spec.gpus_per_trial)
        plan = load_or_plan(study, top, seeds, data_seeds, same_split)
        _plan_progress(callbacks, len(plan["configs"]), spec)
        tracker = study_tracker(study)
        exp_dir = confirm_dir(paths, spec.name)
        where = study.where
        _notes(repair([exp_dir], where))
        if unfinished(exp_dir):
            _start(spec, paths, tracker, None, num_cpus, spec.cpus_per_trial,
                   spec.gpus_per_trial)
            fit_list(exp_dir, plan["configs"], spec, tracker, callbacks or [], where)
            _ended(study, exp_dir, tracker, spec,
                   f"mistudy confirm {shlex.quote(str(paths.root))}")
        reconcile(study, spec, tracker)
        tracker.finish_parent()  # an earlier interrupted phase left it KILLED
        return confirm_info(paths, plan, tracker)


def _plan_progress(callbacks: list[Any] | None, trials: int, spec: StudySpec) -> None:
    """A progress display among ``callbacks`` counts the trials this command runs, and the
    study's epochs (known once the command has opened the study)."""
    for cb in callbacks or []:
        if hasattr(cb, "total"):
            cb.total, cb.epochs = trials, int(spec.fixed.get("epochs", 10))


def _print(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)


def _notes(notes: list[str]) -> None:
    for note in notes:
        _print(note)
