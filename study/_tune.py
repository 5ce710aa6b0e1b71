"""Tune wiring for a study: the trainable with its resources and the Tuner of a
search, of a fixed list of configurations (one RunConfig for both) or restored from a saved
state. Where the experiments live and what they hold: :mod:`study._experiments`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.studyfolder import StudyPaths

from ._experiments import discard_unsaved, search_dirs
from ._folder import Location
from ._resume import keep_tuner_copy
from .spec import StudySpec

if TYPE_CHECKING:
    from ._tracking import Tracker  # mlflow's imports: only where a tracker is made

__all__ = ["build_tuner", "fit_list", "restore_tuner"]


def _trainable(cpus: float, gpus: float) -> Any:
    from ray import tune

    from trainables.ray_trainable import train_tune

    return tune.with_resources(train_tune, {"cpu": cpus, "gpu": gpus})


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def build_tuner(spec: StudySpec, exp_dir: Path, paths: StudyPaths, where: Location,
                 tracker: Tracker, cpus: float, gpus: float, callbacks: list[Any], asked: int = 0,
                 baselines: bool = True,
                 baseline_records: dict[str, Any] | None = None) -> Any:
    from ray import tune

    from ._schedulers import BaselineSafeASHA, ClosurePruner, SaturationStopper
    from ._searcher import StudySearcher

    metric, mode = spec.objectives[0].record_metric  # a relative objective's per-epoch source
    searcher = StudySearcher(spec, where.optuna, where.optuna_study, asked=asked,
                             baselines=baselines, baseline_records=baseline_records,
                             tracker=tracker, where=where)
    scheduler: Any = None
    if spec.scheduler == "asha":
        scheduler = BaselineSafeASHA(metric=metric, mode=mode, time_attr="epochs_done",
                                     max_t=spec.fixed.get("epochs", 10), **spec.asha)
    if spec.scheduler == "closure":
        earlier = tuple(d.name for d in search_dirs(paths, exp_dir) if d != exp_dir.resolve())
        scheduler = ClosurePruner(
            spec.pruner, len(spec.seeds), where, lag=spec.sampler_lag,
            objective=spec.objectives[0].metric if len(spec.objectives) == 1 else None,
            experiments=earlier)
    stop = SaturationStopper(**spec.stopper) if spec.stopper else None
    samples = (spec.trials - asked) * len(spec.seeds) + (spec.num_baselines if baselines else 0)
    tuner = tune.Tuner(
        _trainable(cpus, gpus),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=samples,
            max_concurrent_trials=spec.max_concurrent, trial_dirname_creator=_trial_dirname,
            trial_name_creator=_trial_dirname,
            reuse_actors=True,  # no new process (torch import, data load) per trial
            metric=metric if scheduler is None else None,
            mode=mode if scheduler is None else None),
        run_config=_run_config(exp_dir, spec, tracker, callbacks, stop),
    )
    keep_tuner_copy(exp_dir)  # Tune may tear its tuner.pkl later (study._resume)
    return tuner


def fit_list(exp_dir: Path, configs: list[dict[str, Any]], spec: StudySpec,
             tracker: Tracker, callbacks: list[Any], where: Location) -> None:
    from ray import tune

    from ._confirm import ListSearcher

    cpus, gpus = spec.cpus_per_trial, spec.gpus_per_trial
    if discard_unsaved(exp_dir):
        tuner = restore_tuner(exp_dir, cpus, gpus, where)
    else:
        tuner = tune.Tuner(
            _trainable(cpus, gpus),
            tune_config=tune.TuneConfig(
                search_alg=ListSearcher(configs), num_samples=len(configs),
                trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname,
                reuse_actors=True),
            run_config=_run_config(exp_dir, spec, tracker, callbacks))
        keep_tuner_copy(exp_dir)
    tuner.fit()


def _relocate_new_trials() -> None:
    """Ray 2.60's resume moves the restored trials to where the experiment is now, but the
    searcher's experiment keeps the storage it was pickled with: trials created after a
    resume of a copied or moved folder would write their checkpoints and results into the
    folder's old path. Patched once per process: after Tune's own resume, the searcher's
    experiment gets the controller's storage location too (as its restored trials do)."""
    import copy

    from ray.tune.execution.tune_controller import TuneController

    if getattr(TuneController.resume, "_mistudy", False):
        return
    original = TuneController.resume

    def resume(self: Any, resume_config: Any) -> None:
        original(self, resume_config)
        exp = getattr(self._search_alg, "_experiment", None)
        old = getattr(exp, "storage", None)
        if exp is None or old is None:
            return
        new = copy.copy(old)
        new.storage_filesystem = self._storage.storage_filesystem
        new.storage_fs_path = self._storage.storage_fs_path
        new.experiment_dir_name = self._storage.experiment_dir_name
        exp.storage = new
        exp.spec["storage"] = new

    resume._mistudy = True  # type: ignore[attr-defined]
    TuneController.resume = resume  # type: ignore[method-assign]


def restore_tuner(exp_dir: Path, cpus: float, gpus: float, where: Location) -> Any:
    """Tune's saved experiment in ``exp_dir`` (repaired by the command that opened it:
    ``study._resume.repair``). What Tune unpickles -- the searcher, the scheduler, the
    callbacks with their tracker -- is handed ``where`` (``study._folder.Location``, the
    folder as this command found it) right after, before the fit restores the searcher's
    state; new trials are made where the folder is now (:func:`_relocate_new_trials`)."""
    from ray import tune

    _relocate_new_trials()
    tuner = tune.Tuner.restore(str(exp_dir), _trainable(cpus, gpus),
                               resume_unfinished=True, resume_errored=True)
    # Ray 2.60's Tuner keeps the restored configs on its TunerInternal (no public accessor;
    # study._versions pins the Ray minor this is written against)
    inner = getattr(tuner, "_local_tuner", None)
    tune_config, run_config = getattr(inner, "_tune_config", None), \
        getattr(inner, "_run_config", None)
    if tune_config is None or run_config is None:
        raise RuntimeError("Ray's Tuner changed: no _local_tuner._tune_config/_run_config to "
                           "relocate the restored searcher (study/_tune.py; see _versions)")
    for obj in (tune_config.search_alg, tune_config.scheduler, *(run_config.callbacks or [])):
        if hasattr(obj, "relocate"):
            obj.relocate(where)
    return tuner


def _run_config(exp_dir: Path, spec: StudySpec, tracker: Tracker, callbacks: list[Any],
                stop: Any = None) -> Any:
    """Where Tune keeps the experiment, what logs it (JSON results, MLflow), checkpoints
    (the last two kept), retries."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from ._callbacks import MlflowCallback

    return tune.RunConfig(
        name=exp_dir.name, storage_path=str(exp_dir.parent), verbose=0, stop=stop,
        callbacks=[JsonLoggerCallback(), MlflowCallback(tracker), *callbacks],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures))
