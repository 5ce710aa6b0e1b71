"""The study's Tune searcher: matched CE baselines first, then Optuna (define-by-run) configs,
each run once per seed; Optuna is told the mean objective over seeds.

Why not Ray's ``OptunaSearch``: baselines must run for every batch size × seed but must not
feed the sampler, and one Optuna trial spans several Tune trials (its seeds). Optuna's state
lives in an SQLite file in the study folder, so a resumed study keeps the sampler's history;
this searcher's own bookkeeping (which Tune trial is which Optuna trial and seed) is saved by
Tune with the experiment state.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
from ray.tune.search import Searcher

from trainables.closure import MATCH_KEYS, compare, last_k_mean, match_key, mean_defined
from trainables.fileio import atomic_write_text
from trainables.records import BASELINE_KEY, DEFAULT_ALPHA, ENQUEUED_KEY, schedule_text
from trainables.schedules import FAMILIES

from ._folder import Location
from ._sqlite import ensure_optuna_store
from .spec import StudySpec, parse_spec

__all__ = ["StudySearcher", "sample_config", "baseline_configs", "configuration_outcome",
           "Outcome", "make_sampler", "stored_study", "baseline_config", "baseline_key",
           "kept_record", "ordered_params", "configuration_seed", "reopen_trial"]

_NEW_STATE: dict[str, Any] = {"base_map": dict, "base_done": dict, "told": list,
                              "tracker": None}


def baseline_key(config: Mapping[str, Any]) -> str:
    return json.dumps(match_key(config))


def stored_study(storage_url: str, study_name: str) -> optuna.Study | None:
    """The study's Optuna study as stored, or None before the first configuration was asked
    (the one way every command opens it; the searcher makes it)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study_name, storage=storage_url)
    except KeyError:
        return None


def reopen_trial(study: optuna.Study, number: int) -> optuna.Trial:
    """The RUNNING trial ``number`` as an ``optuna.Trial`` (to set its attributes and
    constraints, report and tell it). Optuna's ask-and-tell keeps the Trial object it asked;
    this searcher's Trial objects cannot outlive a driver kill (Tune saves the searcher as
    JSON), and Optuna has no public way to reopen a trial by number: ``optuna.Trial`` takes
    the storage's internal trial id, which only the FrozenTrial's private ``_trial_id``
    holds. The one place mistudy reads it."""
    frozen = study.get_trials(deepcopy=False)[number]  # numbers are 0..n-1
    return optuna.Trial(study, frozen._trial_id)


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    """TPE; for two objectives NSGA-II in the asynchronous search, multi-objective TPE in the
    ordered one (NSGA-II's generations depend on which trials were running when it asked).
    Both read the guards' constraints that the searcher stores on each trial before telling
    it (``Trial.set_constraint``)."""
    if len(spec.objectives) > 1 and spec.sampler_lag is None:
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, spec.trials))


def configuration_seed(sampler_seed: int, number: int) -> int:
    """The sampler's seed for configuration ``number`` in the ordered search: a hash of both,
    so that two sampler seeds never share draws (``seed + number`` would make seed 1's k-th
    configuration seed 0's (k+1)-th)."""
    return int(np.random.SeedSequence([sampler_seed, number]).generate_state(1)[0])


def ordered_params(spec: StudySpec, number: int,
                   trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """Configuration ``number``'s Optuna params in the ordered search (``sampler_lag`` L): a
    fresh sampler, seeded by :func:`configuration_seed`, over an in-memory copy of the
    configurations numbered 0..number-L exactly (all told). Nothing else -- which other trials
    finished, how many CPUs, whether the driver was restarted -- reaches it."""
    lag = spec.sampler_lag
    assert lag is not None
    known = sorted((t for t in trials if t.number <= number - lag), key=lambda t: t.number)
    assert all(t.state.is_finished() for t in known), "asked before its inputs were told"
    mem = optuna.create_study(
        directions=["minimize" if o.mode == "min" else "maximize" for o in spec.objectives],
        sampler=make_sampler(spec, configuration_seed(spec.sampler_seed, number)))
    mem.add_trials(known)
    trial = mem.ask()
    sample_config(trial, spec)
    return dict(trial.params)


class Outcome(NamedTuple):
    """What Optuna is told about one configuration, and why."""

    values: list[float] | None  # None: told FAIL
    state: str  # COMPLETE | FAIL
    reason: str  # why FAIL ("" otherwise)
    attrs: dict[str, Any]  # Optuna user attrs (means over seeds, constraints, seeds)
    per_trial: dict[str, dict[str, float]]  # tune trial id -> that seed's values


def _seed_values(spec: StudySpec, records: list[dict[str, Any]],
                 baseline: list[dict[str, Any]] | None) -> dict[str, float]:
    out = {o.metric: last_k_mean(records, o.metric, spec.last_k)
           for o in spec.objectives if not o.relative}
    if baseline is not None:
        comp = compare(records, [baseline], spec.last_k)
        out.update({k: v for k, v in comp.items() if k.startswith("val_")})
    return out


def configuration_outcome(spec: StudySpec, config: Mapping[str, Any],
                          seeds: Mapping[int, dict[str, Any] | None],
                          base_done: Mapping[str, list[dict[str, Any]] | None]) -> Outcome:
    """The mean over seeds of each objective (``trainables.closure``'s rule against each
    seed's matched baseline), the guards' constraints, or FAIL with the reason."""
    per_trial: dict[str, dict[str, float]] = {}
    for seed, entry in sorted(seeds.items()):
        if entry is None:
            continue
        base = base_done.get(baseline_key({**spec.fixed, **config, "seed": seed})) \
            if spec.relative else None
        if spec.relative and base is None:
            return Outcome(None, "FAIL", f"the matched baseline of seed {seed} failed", {}, {})
        per_trial[entry["trial_id"]] = _seed_values(spec, entry["records"], base)
    if not per_trial:
        return Outcome(None, "FAIL", "every seed's trial failed", {}, {})
    keys = sorted({k for v in per_trial.values() for k in v})
    means = {k: mean_defined(v.get(k, math.nan) for v in per_trial.values()) for k in keys}
    attrs: dict[str, Any] = {k: v for k, v in means.items() if math.isfinite(v)}
    attrs["seeds"] = len(per_trial)
    values = [means.get(o.metric, math.nan) for o in spec.objectives]
    bad = [o.metric for o, v in zip(spec.objectives, values) if not math.isfinite(v)]
    if bad:
        why = ("undefined: the matched baselines have no positive validation gap"
               if bad == ["val_closure"] else "not finite")
        return Outcome(None, "FAIL", f"{', '.join(bad)} {why}", attrs, per_trial)
    if spec.guards.active:
        attrs["constraints"] = spec.guards.constraints(means["val_acc_delta"],
                                                       means["val_ce_delta"])
        attrs["feasible"] = all(c <= 0 for c in attrs["constraints"].values())
    return Outcome(values, "COMPLETE", "", attrs, per_trial)


def sample_config(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Define-by-run: the family first, then only that family's parameters."""
    family = trial.suggest_categorical("family", sorted(spec.families))
    declared = {p.name: p for p in FAMILIES[family].params}
    transition: dict[str, Any] = {"family": family}
    for pname, (lo, hi) in spec.families[family].items():
        p, key = declared[pname], f"{family}.{pname}"
        if lo == hi:
            transition[pname] = int(lo) if p.integer else float(lo)
        elif p.integer:
            transition[pname] = trial.suggest_int(key, int(lo), int(hi))
        else:
            log = p.log and lo > 0
            transition[pname] = trial.suggest_float(key, float(lo), float(hi), log=log)
    lo, hi = spec.alpha
    if spec.alpha_choices:  # e.g. integer orders: the estimator's trace path
        choices = list(spec.alpha_choices)
        alpha = choices[0] if len(choices) == 1 else \
            float(trial.suggest_categorical("alpha", choices))
    else:
        alpha = lo if lo == hi else trial.suggest_float("alpha", lo, hi)
    bs = spec.batch_sizes
    batch = bs[0] if len(bs) == 1 else trial.suggest_categorical("batch_size", list(bs))
    return {"transition": transition, "alpha": alpha, "batch_size": batch}


def baseline_config(spec: StudySpec, batch_size: int, seed: int) -> dict[str, Any]:
    """The matched plain-CE run for ``batch_size`` and ``seed`` (the search's and the
    confirmation's alike; the caller adds the fixed settings and the split draw)."""
    # MI is only measured for baselines, never in their loss: any alpha the spec allows serves
    # (a choice first: `estimator: trace` takes integer orders only)
    alpha = spec.alpha_choices[0] if spec.alpha_choices else \
        spec.alpha[0] if spec.alpha[0] == spec.alpha[1] else DEFAULT_ALPHA
    return {"transition": {"family": "constant", "c": 1.0}, "alpha": alpha,
            "batch_size": batch_size, "seed": seed, BASELINE_KEY: True}


def baseline_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """Plain-CE runs for every batch size × seed the searched trials can use."""
    return [baseline_config(spec, b, s) for b in spec.batch_sizes for s in spec.seeds]


# Per-epoch keys the searcher keeps: validation and training only -- the test split never
# reaches the sampler.
_KEPT = ("epoch", "train_ce", "val_ce", "val_acc", "val_gap")


def kept_record(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in _KEPT if k in result}


class StudySearcher(Searcher):
    def __init__(self, spec: StudySpec, storage_url: str, study_name: str, asked: int = 0,
                 baselines: bool = True,
                 baseline_records: dict[str, list[dict[str, Any]]] | None = None,
                 tracker: Any = None, where: Location | None = None) -> None:
        """``asked``: configurations sampled by earlier experiments of this study (a grown
        study continues after them); ``baselines``: False when they ran already, and then
        ``baseline_records`` holds their records (match key -> records); ``where``: the
        study's folder as the command found it (the pruner's decisions file)."""
        obj = spec.objectives[0]
        super().__init__(metric=obj.record_metric[0], mode=obj.record_metric[1])
        self.spec = spec
        self.storage_url = storage_url
        self.study_name = study_name
        self.baselines: deque[dict[str, Any]] = deque(baseline_configs(spec) if baselines
                                                      else [])
        self.pending_seeds: deque[tuple[int, int]] = deque()  # (optuna number, seed) to emit
        self.configs: dict[int, dict[str, Any]] = {}  # optuna number -> sampled config
        self.trial_map: dict[str, tuple[int, int]] = {}  # tune trial id -> (number, seed)
        # tune trial id -> epoch -> kept record (an epoch re-reported after a resume once)
        self.histories: dict[str, dict[str, dict[str, Any]]] = {}
        # number -> seed -> {"trial_id", "records"} (None: the trial failed)
        self.done: dict[int, dict[int, dict[str, Any] | None]] = {}
        self.base_map: dict[str, str] = {}  # tune trial id of a baseline -> match key
        # match key -> records of a finished baseline, or None when it failed
        self.base_done: dict[str, list[dict[str, Any]] | None] = dict(baseline_records or {})
        self.told: list[int] = []
        self.asked = asked
        # A grown study's sampler must not replay the first experiment's random draws (the
        # same seed would re-sample its startup configurations): seed + configurations so far.
        self.sampler_seed = spec.sampler_seed + asked
        self.start_asked = asked  # configurations asked when this experiment began
        self.tracker = tracker  # MLflow: the told values and failures (optional)
        # the folder as the command found it: given when built, set by relocate() when Tune
        # restored this (never pickled: a copied folder's pickle names the old one)
        self._where: Location | None = where
        self._study: optuna.Study | None = None
        self._blocked_at: tuple[int, int, int] | None = None  # (number, tells) of the last "wait"
        # The in-memory state of the last ask that had to wait: Tune asks again at every step
        # of its loop, and each ask reads Optuna's store three times (~15 ms on SQLite); while
        # nothing has finished since, the answer is the same "wait" without reading it.
        self._wait_key: tuple[int, int, int, int] | None = None
        self._events = 0  # trials completed or handed out: what can end a wait

    # ---- Optuna --------------------------------------------------------------------------
    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            ensure_optuna_store(self.storage_url)
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created"
            self._study = optuna.create_study(
                storage=self.storage_url, study_name=self.study_name, load_if_exists=True,
                directions=["minimize" if o.mode == "min" else "maximize"
                            for o in self.spec.objectives],
                sampler=make_sampler(self.spec, self._draw_seed()))
            names = [o.metric for o in self.spec.objectives]
            if self._study.metric_names != names:  # optuna-dashboard shows them by name
                with warnings.catch_warnings():  # "experimental since 3.2": not the user's
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._study.set_metric_names(names)
            if self.asked == 0 and not self._study.trials:  # a new study: enqueued first
                for params in self.spec.enqueue:
                    self._study.enqueue_trial(params, user_attrs={"enqueued": True})
        return self._study

    def _draw_seed(self) -> int:
        """The sampler's seed for the draws still to come. A sampler's random state is not
        saved with the searcher: rebuilt on a restore with the seed it began with, it would
        draw its first configurations again. Offset by the configurations this experiment
        has asked so far, it continues with new draws; an uninterrupted run builds it once,
        at offset 0."""
        return self.sampler_seed + (self.asked - self.start_asked)

    def _ask(self) -> bool:
        """Ask Optuna for the next configuration; False while the ordered search must wait
        (:meth:`_ready`). A trial asked before a kill (RUNNING) or enqueued (WAITING: the
        spec's, or this searcher's own ordered draw) is taken as it is stored."""
        if self._wait_key == self._state_key():
            return False
        trial = self._orphan()
        if trial is None and self.spec.sampler_lag is not None and not self._waiting():
            number = len(self.study.get_trials(deepcopy=False))
            if not self._ready(number):
                self._wait_key = self._state_key()
                return False
            params = ordered_params(self.spec, number, self.study.get_trials(deepcopy=False))
            self.study.enqueue_trial(params, user_attrs={"ordered": True})
        trial = trial or self.study.ask()
        config = sample_config(trial, self.spec)
        if trial.user_attrs.get("enqueued"):
            config[ENQUEUED_KEY] = True
        self.configs[trial.number] = config
        self.done[trial.number] = {}
        self.pending_seeds.extend((trial.number, s) for s in self.spec.seeds)
        self.asked += 1
        return True

    def _state_key(self) -> tuple[int, int, int, int]:
        """What can change the ordered search's answer, as held in memory: configurations
        asked and told, baselines done, trials completed or handed out."""
        return self.asked, len(self.told), len(self.base_done), self._events

    def _waiting(self) -> bool:
        """Whether Optuna holds an enqueued configuration not asked yet (its place is kept)."""
        return bool(self.study.get_trials(deepcopy=False,
                                          states=(optuna.trial.TrialState.WAITING,)))

    def _ready(self, number: int) -> bool:
        """The ordered search's rule for sampling configuration ``number``: every baseline has
        finished where the study compares with them (so the pruner judges every epoch of a
        sampled configuration against its baseline) and every configuration
        numbered 0..number-lag has been told. Checked again only after a tell."""
        version = (number, len(self.told), len(self.base_done))
        if self._blocked_at == version:
            return False
        lag = self.spec.sampler_lag
        assert lag is not None
        needs_baselines = self.spec.relative or self.spec.scheduler == "closure"
        baselines_done = not needs_baselines or (not self.baselines and not self.base_map)
        told = all(t.state.is_finished() for t in self.study.get_trials(deepcopy=False)
                   if t.number <= number - lag)
        if baselines_done and told:
            self._blocked_at = None
            return True
        if not self.trial_map and not self.base_map and self._tell_lost():
            return self._ready(number)
        self._blocked_at = version
        return False

    def _tell_lost(self) -> bool:
        """Nothing of this searcher runs, yet a configuration it asked is untold: a seed's
        trial was lost with a searcher save older than Tune's (docs/reliability.md). Its
        missing seeds count as failed, so the search goes on instead of waiting forever."""
        lost = [n for n in self.configs if n not in self.told and not self.pending_seeds]
        for n in lost:
            for seed in self.spec.seeds:
                self.done.setdefault(n, {}).setdefault(seed, None)
            print(f"mistudy: configuration {n}: no trial of it is running and it was never "
                  "told; its missing seeds count as failed", flush=True)
        self._tell_ready()
        return bool(lost)

    def _orphan(self) -> optuna.Trial | None:
        """A trial this experiment asked Optuna for but never recorded: the driver was killed
        after the ask and before Tune saved this searcher. It is taken again, with the values
        Optuna already stored, rather than asked anew, so a resume never leaves a RUNNING
        trial behind nor samples an extra configuration. Only numbers from this experiment's
        start are taken (an earlier experiment's orphans were told FAIL when it ended)."""
        running = self.study.get_trials(deepcopy=False,
                                        states=(optuna.trial.TrialState.RUNNING,))
        for t in sorted(running, key=lambda t: t.number):
            if t.number >= self.start_asked and t.number not in self.configs:
                return reopen_trial(self.study, t.number)
        return None

    # ---- Tune's Searcher API -------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # metric/mode come from the study spec

    def suggest(self, trial_id: str) -> Any:  # a config dict, or Searcher.FINISHED
        # Every suggestion is a full training config (fixed settings + searched values), so
        # Tune's records hold everything needed to rerun a trial.
        if self.baselines:
            config = {**self.spec.fixed, **self.baselines.popleft()}
            self.base_map[trial_id] = baseline_key(config)
            return config
        while True:
            if not self.pending_seeds:
                if self.asked >= self.spec.trials:
                    return Searcher.FINISHED
                if not self._ask():
                    return None  # waits for the configurations its draw depends on
            number, seed = self.pending_seeds.popleft()
            if self._pruned(number) is None:
                break
            # pruned before this seed's trial was saved (a kill right after the decision): the
            # configuration is decided, so the seed is not trained again
            self.done.setdefault(number, {})[seed] = None
            self._tell_ready()
        self.trial_map[trial_id] = (number, seed)
        self._events += 1
        return {**self.spec.fixed, **self.configs[number], "seed": seed, "optuna_trial": number}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if (trial_id in self.trial_map or trial_id in self.base_map) and "epoch" in result:
            epoch = str(int(result["epoch"]))
            self.histories.setdefault(trial_id, {})[epoch] = kept_record(result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        self._events += 1
        records = sorted(self.histories.pop(trial_id, {}).values(), key=lambda r: r["epoch"])
        if trial_id in self.base_map:
            self.base_done[self.base_map.pop(trial_id)] = None if error or not records \
                else records
        elif trial_id in self.trial_map:
            number, seed = self.trial_map.pop(trial_id)
            self.done.setdefault(number, {})[seed] = None if error or not records else {
                "trial_id": trial_id, "records": records}
        else:
            return  # a trial from before a lost searcher save
        self._tell_ready()

    def recover(self, records: Mapping[str, list[dict[str, Any]]],
                finished: set[str]) -> tuple[int, list[str]]:
        """Bring a restored state up to the trials' records (``study._resume``): the epochs a
        trial in flight trained that its history lacks, and the completion of a trial Tune
        finished after this state was saved (told as usual once its configuration is ready).
        Returns (epoch records added, trials completed)."""
        added = 0
        for tid in set(self.trial_map) | set(self.base_map):
            for r in records.get(tid, []):
                history = self.histories.setdefault(tid, {})
                if str(int(r["epoch"])) not in history:
                    history[str(int(r["epoch"]))] = kept_record(r)
                    added += 1
        completed = sorted(t for t in finished if t in self.trial_map or t in self.base_map)
        for tid in completed:
            self.on_trial_complete(tid)
        return added, completed

    # ---- the deferred tell ---------------------------------------------------------------
    def _tell_ready(self) -> None:
        """Tell every configuration whose seeds and matched baselines have all finished."""
        for number, seeds in sorted(self.done.items()):
            if number in self.told or len(seeds) < len(self.spec.seeds):
                continue
            if self.spec.relative and any(
                    baseline_key({**self.spec.fixed, **self.configs[number], "seed": s})
                    not in self.base_done for s, e in seeds.items() if e is not None):
                continue  # a matched baseline is still running
            self._tell(number)

    def _tell(self, number: int) -> None:
        state = self.study.get_trials(deepcopy=False)[number].state  # numbers are 0..n-1
        if state.is_finished():  # told before a kill, and the searcher's save came earlier
            self.told.append(number)
            return
        outcome = configuration_outcome(self.spec, self.configs[number], self.done[number],
                                        self.base_done)
        pruned = self._pruned(number)
        if pruned is not None:  # scheduler: closure stopped it (trainables.pruning)
            epoch, rule, score = pruned
            outcome = outcome._replace(values=None, state="PRUNED",
                                       reason=f"pruned at epoch {epoch}: {rule}")
        trial = reopen_trial(self.study, number)
        for k, v in outcome.attrs.items():
            trial.set_user_attr(k, v)
        for name, bound in outcome.attrs.get("constraints", {}).items():
            trial.set_constraint(name, bound)  # what TPE / NSGA-II read
        if pruned is not None:
            # TPE ranks pruned trials by their last intermediate value: the objective's own
            # score at the pruning epoch (pruning.json keeps the same number)
            if score is not None and len(self.spec.objectives) == 1:
                trial.report(float(score), step=epoch)
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED)
            print(f"mistudy: configuration {number} ({schedule_text(self.configs[number])}) "
                  f"told PRUNED: {outcome.reason}", flush=True)
        elif outcome.values is None:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            print(f"mistudy: configuration {number} ({schedule_text(self.configs[number])}) "
                  f"told FAIL: {outcome.reason}", flush=True)
        else:
            v = outcome.values
            self.study.tell(number, v if len(v) > 1 else v[0])
        self.told.append(number)
        if self.tracker is not None:
            self._log_told(number, outcome)

    def _pruned(self, number: int) -> tuple[int, str, float | None] | None:
        if self.spec.scheduler != "closure":
            return None
        from trainables.pruning import pruned_configuration

        where = getattr(self, "_where", None)  # set by the command that built or restored it
        return None if where is None else pruned_configuration(Path(where.pruning), number)

    def _log_told(self, number: int, outcome: Outcome) -> None:
        """The told values and any failure reason on the configuration's MLflow runs (a store
        failure is reported, never fatal: the sync at the end logs them again)."""
        try:
            self.tracker.log_objective(outcome.per_trial, outcome.state, outcome.reason)
        except Exception as exc:  # the study goes on without these columns
            print(f"mistudy: could not log configuration {number}'s value to MLflow "
                  f"({type(exc).__name__}: {exc})", flush=True)

    # ---- persistence (Tune calls these with the experiment state) ------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_study", "_blocked_at", "_where", "_wait_key", "_events")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for k, v in _NEW_STATE.items():  # states saved by older versions
            self.__dict__.setdefault(k, v() if callable(v) else v)
        self.__dict__.setdefault("sampler_seed", self.spec.sampler_seed)
        self.__dict__.setdefault("start_asked", 0)
        self._study = None
        self._blocked_at = None
        self._wait_key = None
        self._events = 0

    def relocate(self, where: Location) -> None:
        """Where the restoring command found the study: its Optuna store is there, not where
        the state was saved (kept for :meth:`restore`, which Tune calls later in the fit)."""
        if where.optuna_study == self.study_name:
            self._where = where
            self.storage_url = where.optuna
            self._study = None

    @classmethod
    def from_state_file(cls, path: Path, where: Location | None = None
                        ) -> StudySearcher | None:
        """A searcher as Tune would restore it from ``path`` (no tracker), relocated to
        ``where``; None when the file is not this searcher's JSON state."""
        try:
            state = json.loads(Path(path).read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(state, dict) or "histories" not in state:
            return None
        searcher = cls.__new__(cls)
        Searcher.__init__(searcher)
        searcher.tracker = None
        searcher._where = where
        searcher.restore(str(path))
        return searcher

    def _rekey(self, key: str) -> str:
        """A match key saved before the split draw joined the keys: the study's own draw."""
        parts = json.loads(key)
        if len(parts) == len(MATCH_KEYS) - 1:
            parts.append(match_key({"data_seed": self.spec.fixed.get("data_seed")})[-1])
        return json.dumps(parts)

    def save(self, checkpoint_path: str) -> None:
        """The searcher's state as JSON (data, never code; Tune's own files are pickles)."""
        state = {
            "version": 2, "spec": self.spec.raw, "storage_url": self.storage_url,
            "study_name": self.study_name, "baselines": list(self.baselines),
            "pending_seeds": [list(p) for p in self.pending_seeds],
            "configs": {str(n): c for n, c in self.configs.items()},
            "trial_map": {t: list(p) for t, p in self.trial_map.items()},
            "histories": self.histories,
            "done": {str(n): {str(s): v for s, v in d.items()} for n, d in self.done.items()},
            "base_map": self.base_map, "base_done": self.base_done, "told": self.told,
            "asked": self.asked, "sampler_seed": self.sampler_seed,
            "start_asked": self.start_asked,
        }
        atomic_write_text(Path(checkpoint_path), json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            blob = fh.read()
        try:
            s = json.loads(blob)
        except (UnicodeDecodeError, json.JSONDecodeError):
            # A folder made before the JSON state: its pickle. Unpickling runs whatever the
            # file says -- resume only folders you trust (docs/reliability.md).
            self.__setstate__(pickle.loads(blob))
            return
        self.spec = parse_spec(s["spec"])
        self.study_name = s["study_name"]
        where = getattr(self, "_where", None)  # the folder as it is now, not as saved
        self.storage_url = where.optuna if where is not None \
            and where.optuna_study == self.study_name else s["storage_url"]
        self.baselines = deque(s["baselines"])
        self.pending_seeds = deque((int(n), int(sd)) for n, sd in s["pending_seeds"])
        self.configs = {int(n): c for n, c in s["configs"].items()}
        self.trial_map = {t: (int(p[0]), int(p[1])) for t, p in s["trial_map"].items()}
        # version 1 kept a list of objective values per trial: read as a history-less state
        self.histories = {t: h for t, h in s["histories"].items() if isinstance(h, dict)}
        self.done = {int(n): {int(sd): v if isinstance(v, dict) or v is None else None
                              for sd, v in d.items()} for n, d in s["done"].items()}
        self.base_map = {t: self._rekey(k) for t, k in s.get("base_map", {}).items()}
        self.base_done = {self._rekey(k): v for k, v in s.get("base_done", {}).items()}
        self.told = [int(n) for n in s.get("told", [])]
        self.asked, self.sampler_seed = int(s["asked"]), int(s["sampler_seed"])
        # states saved before start_asked: the experiment began at sampler_seed's offset
        self.start_asked = int(s.get("start_asked", self.sampler_seed - self.spec.sampler_seed))
        self._study = None
        self._blocked_at = None
        self._wait_key = None
        self._events = 0
