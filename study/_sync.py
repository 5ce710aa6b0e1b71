"""After the fits: MLflow made to match Tune's results (``sync_study``), the ranking back-filled
onto the runs, and the summaries the CLI prints (best configurations, the confirmation table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainables.records import BASELINE_KEY, PHASE_KEY, TAGS, run_group, schedule_text
from trainables.studyfolder import StudyPaths

from ._experiments import experiment_dirs, read_results, study_trials, trial_error_text
from ._folder import Study, StudyError, check_tracking, open_study, writer_lock
from ._resume import repair
from ._tracking import Tracker, study_tracker
from .spec import StudySpec

__all__ = ["sync_study", "reconcile", "best_trials", "baseline_records", "confirm_info"]


def baseline_records(trials: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Match key -> records of every finished baseline among the study's ``trials``
    (:func:`study._experiments.study_trials`; failed: None)."""
    from ._searcher import baseline_key, kept_record

    found: dict[str, list[dict[str, Any]] | None] = {}
    for t in trials:
        if t["config"].get(BASELINE_KEY) and t["status"] in ("TERMINATED", "ERROR"):
            records = read_results(t["path"])
            found[baseline_key(t["config"])] = None if t["error"] or not records else [
                kept_record(r) for r in records]
    return found  # type: ignore[return-value]


def sync_study(paths: StudyPaths) -> dict[str, int]:
    """``mistudy sync``: under the folder's lock, the experiments repaired
    (``study._experiments.repair``), MLflow made to match Tune's results (:func:`reconcile`),
    and the parent run ended in its true state: FINISHED when every trial ended, else KILLED
    (a parent a deleted store made anew would otherwise stay RUNNING)."""
    with writer_lock(paths):
        study = open_study(paths)
        check_tracking(study.meta["tracking_uri"])
        notes = repair(experiment_dirs(paths, study.spec.name), study.where)
        for note in notes:
            print(note, flush=True)
        tracker = study_tracker(study)
        stats, done, _ = reconcile(study, study.spec, tracker)
        tracker.finish_parent("FINISHED" if done else "KILLED")
        return {**stats, "repairs": len(notes)}


def reconcile(study: Study, spec: StudySpec, tracker: Tracker
              ) -> tuple[dict[str, int], bool, Any]:
    """Make the MLflow store match Tune's results exactly: one run per trial, every epoch
    once, artifacts, status and summary metrics; stray runs of trials Tune does not know are
    deleted; the ranking back-filled. The caller holds the folder's lock and has repaired its
    experiments (a lifecycle command after its fits, with its own tracker and spec, or
    :func:`sync_study`; ``spec``: the study's, or the grown one a run just fitted). Returns
    (counts, whether every trial ended, the study's ``analysis.Analysis`` or None: nothing to
    rank yet)."""
    paths = study.paths
    trials = study_trials(paths, spec.name)
    if not trials and not paths.ray.exists():
        raise StudyError(f"no Tune experiment in {paths.ray}")
    tracker.parent_run(spec.raw)
    known = {t["trial_id"] for t in trials}
    stray = {tid: rid for tid, rid in tracker.trial_runs().items() if tid not in known}
    for run_id in stray.values():
        tracker.delete_run(run_id)
    logged = 0
    for t in trials:
        records = read_results(t["path"])
        if not records and not t["error"]:
            continue
        run_id = tracker.ensure_trial_run(t["trial_id"], t["config"])
        new = tracker.log_records(run_id, records)
        logged += new
        error = trial_error_text(t["error_file"] or "") if t["error"] else None
        # a trial a stop left unfinished is KILLED (resumable), never FINISHED
        status = "FAILED" if t["error"] else \
            "FINISHED" if t["status"] == "TERMINATED" else "KILLED"
        logged_status, metrics = tracker.run_state(run_id)
        if logged_status != status or new or "final_gap" not in metrics:
            tracker.finish_trial(run_id, records, t["config"], status, error,
                                 trial_dir=t["path"])
    _retell(study, tracker, trials)
    analysis = _backfill_ranking(paths.root, tracker)
    done = all(t["status"] in ("TERMINATED", "ERROR") for t in trials)
    return {"trials": len(trials), "epochs_logged": logged,
            "stray_runs_deleted": len(stray)}, done, analysis


def _retell(study: Study, tracker: Tracker, trials: list[dict[str, Any]]) -> int:
    """Each trial run's ``told`` tag made equal to what Optuna holds for its configuration
    (COMPLETE, PRUNED or FAIL), and its chart group (``trainables.records.run_group``) to its
    schedule, phase and state: the searcher logs the first as it tells, but a run the MLflow
    callback had not created yet, a store that was down, or a kill between the tell and the
    log leave it missing -- and the ranking, confirm, export and the UI read pruned schedules
    from it. Returns the runs changed."""
    state = _told_states(study)
    runs, tags = tracker.trial_runs(), tracker.told_tags()
    changed = 0
    for t in trials:
        cfg, run_id = t["config"], runs.get(t["trial_id"])
        number = cfg.get("optuna_trial")
        searched = not cfg.get(BASELINE_KEY) and not cfg.get(PHASE_KEY) and number is not None
        told = state.get(int(number)) if searched else None
        want = {TAGS.group: run_group(schedule_text(cfg), bool(cfg.get(BASELINE_KEY)),
                                      str(cfg.get(PHASE_KEY) or "search"),
                                      pruned=told == "PRUNED")}
        if told is not None:
            want[TAGS.told] = told
        have = dict(zip((TAGS.told, TAGS.group), tags.get(t["trial_id"], (None, None)),
                        strict=True))
        if run_id is not None and any(have.get(k) != v for k, v in want.items()):
            tracker.set_tags(run_id, want)
            changed += 1
    return changed


def _told_states(study: Study) -> dict[int, str]:
    """Optuna configuration number -> its finished state (COMPLETE, PRUNED, FAIL)."""
    from ._searcher import stored_study

    paths = study.paths
    stored = stored_study(paths.optuna, study.optuna_name) if paths.optuna_db.is_file() \
        else None
    return {} if stored is None else {t.number: t.state.name
                                      for t in stored.get_trials(deepcopy=False)
                                      if t.state.is_finished()}


def _backfill_ranking(out: Path, tracker: Tracker) -> Any:
    """Gap closure on every searched trial run that has matched baselines (the ranking's
    numbers, with the study's last_k and saturation settings), and the ranking on the parent
    run: ``ranking.csv``/``ranking.md`` and the best schedule's closure as metrics."""
    from analysis import AnalysisError, analyze, log_ranking

    try:
        a = analyze(str(out))
    except AnalysisError:
        return None  # nothing to rank yet (no finished trials, or only baselines)
    from ._view import share_view

    keys = ("val_closure", "test_closure", "val_gap_reduction", "test_gap_reduction",
            "val_acc_delta", "test_acc_delta", "val_ce_delta", "test_ce_delta",
            "train_ce_delta")
    # test_closure again as gap_closure: the plain link's sort column; each run's place in
    # the view the printed link opens (the top schedules beside their baselines) with them
    share_view(tracker, a.ranking, a.trials, {
        row["run_id"]: {**{k: row[k] for k in keys}, "gap_closure": row["test_closure"]}
        for row in a.matched.to_dict("records")})
    log_ranking(a, tracker.log_text)
    best = a.ranking.dropna(subset=[a.selection.metric]).head(1)
    if a.data.parent_run_id and not best.empty:
        top = best.iloc[0]
        tracker.log_values(a.data.parent_run_id, {
            f"best_{k}": top[k]
            for k in ("val_closure", "test_closure", "delta_val_acc", "delta_test_acc")},
            {TAGS.best_schedule: str(top.schedule),
             TAGS.selected_by: f"{a.selection.metric} on validation"})
    return a


def best_trials(study: Study, k: int = 5) -> list[dict[str, Any]]:
    """The configurations Optuna was told, best first by the first objective, feasible ones
    (guards) before infeasible: the search's own rule, which the ranking shares."""
    import optuna

    from ._searcher import stored_study

    stored = stored_study(study.paths.optuna, study.optuna_name)
    if stored is None:
        return []
    obj = study.spec.objectives[0]
    done = [t for t in stored.trials if t.state == optuna.trial.TrialState.COMPLETE]
    sign = -1.0 if obj.mode == "max" else 1.0
    done.sort(key=lambda t: (not t.user_attrs.get("feasible", True), sign * t.values[0]))
    return [{"number": t.number, "params": t.params, "value": t.values[0],
             "feasible": t.user_attrs.get("feasible", True), "attrs": t.user_attrs}
            for t in done[:k]]


def confirm_info(paths: StudyPaths, plan: dict[str, Any],
                 tracker: Tracker | None = None) -> Any:
    """The confirmation table from the study's records (``analysis.confirmation``); written
    to ``confirm.md`` and, with a tracker, to the parent run."""
    from analysis import best_confirmed_line, confirmation, format_confirm
    from trainables.fileio import atomic_write_text

    info = confirmation(str(paths.root))
    if info is None:
        raise StudyError(f"{paths.root}: the confirmation runs have no finished trials")
    text = format_confirm(info, wide=True)  # every column, 4 decimals; the terminal: 120
    atomic_write_text(paths.confirm_report, "```\n" + text + "\n```\n")
    if tracker is not None:
        parent = tracker.parent_run()
        tracker.log_text(parent, info.table.to_csv(index=False), "confirm.csv")
        tracker.log_text(parent, text, "confirm.txt")
        line = best_confirmed_line(info)
        if line:  # the first thing the UI shows of the study: its parent's and its description
            tracker.set_tags(parent, {TAGS.note: line})
            tracker.set_experiment_tag(TAGS.note, line)
    return info
