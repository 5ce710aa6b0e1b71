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
import os
import pickle
from collections import deque
from typing import Any

import optuna
from ray.tune.search import Searcher

from trainables.records import BASELINE_KEY, DEFAULT_ALPHA
from trainables.schedules import FAMILIES

from ._sqlite import ensure_optuna_store
from .spec import StudySpec, parse_spec

__all__ = ["StudySearcher", "sample_config", "baseline_configs", "objective_value"]


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
    alpha = lo if lo == hi else trial.suggest_float("alpha", lo, hi)
    bs = spec.batch_sizes
    batch = bs[0] if len(bs) == 1 else trial.suggest_categorical("batch_size", list(bs))
    return {"transition": transition, "alpha": alpha, "batch_size": batch}


def baseline_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """Plain-CE runs for every batch size × seed the searched trials can use."""
    # MI is only measured for baselines, never in their loss: any alpha serves
    alpha = spec.alpha[0] if spec.alpha[0] == spec.alpha[1] else DEFAULT_ALPHA
    return [{"transition": {"family": "constant", "c": 1.0}, "alpha": alpha, "batch_size": b,
             "seed": s, BASELINE_KEY: True}
            for b in spec.batch_sizes for s in spec.seeds]


def objective_value(history: list[dict[str, Any]], metric: str, last_k: int) -> float:
    """Mean of ``metric`` over the last ``last_k`` epochs of a trial's results."""
    vals = [float(r[metric]) for r in history if metric in r][-last_k:]
    return sum(vals) / len(vals) if vals else float("nan")


class StudySearcher(Searcher):
    def __init__(self, spec: StudySpec, storage_url: str, study_name: str, asked: int = 0,
                 baselines: bool = True) -> None:
        """``asked``: configurations sampled by earlier experiments of this study (a grown
        study continues after them); ``baselines``: False when they ran already."""
        obj = spec.objectives[0]
        super().__init__(metric=obj.metric, mode=obj.mode)
        self.spec = spec
        self.storage_url = storage_url
        self.study_name = study_name
        self.baselines: deque[dict[str, Any]] = deque(baseline_configs(spec) if baselines
                                                      else [])
        self.pending_seeds: deque[tuple[int, int]] = deque()  # (optuna number, seed) to emit
        self.configs: dict[int, dict[str, Any]] = {}  # optuna number -> sampled config
        self.trial_map: dict[str, tuple[int, int]] = {}  # tune trial id -> (number, seed)
        self.histories: dict[str, list[dict[str, Any]]] = {}  # tune trial id -> results
        self.done: dict[int, dict[int, list[float] | None]] = {}  # number -> seed -> values
        self.asked = asked
        # A grown study's sampler must not replay the first experiment's random draws (the
        # same seed would re-sample its startup configurations): seed + configurations so far.
        self.sampler_seed = spec.sampler_seed + asked
        self._study: optuna.Study | None = None

    # ---- Optuna --------------------------------------------------------------------------
    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
                seed=self.sampler_seed, n_startup_trials=min(10, self.spec.trials))
            if len(self.spec.objectives) > 1:
                sampler = optuna.samplers.NSGAIISampler(seed=self.sampler_seed)
            ensure_optuna_store(self.storage_url)
            self._study = optuna.create_study(
                storage=self.storage_url, study_name=self.study_name, load_if_exists=True,
                directions=["minimize" if o.mode == "min" else "maximize"
                            for o in self.spec.objectives],
                sampler=sampler)
        return self._study

    def _ask(self) -> None:
        trial = self.study.ask()
        self.configs[trial.number] = sample_config(trial, self.spec)
        self.done[trial.number] = {}
        self.pending_seeds.extend((trial.number, s) for s in self.spec.seeds)
        self.asked += 1

    # ---- Tune's Searcher API -------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # metric/mode come from the study spec

    def suggest(self, trial_id: str) -> Any:  # a config dict, or Searcher.FINISHED
        # Every suggestion is a full training config (fixed settings + searched values), so
        # Tune's records hold everything needed to rerun a trial.
        if self.baselines:
            return {**self.spec.fixed, **self.baselines.popleft()}
        if not self.pending_seeds:
            if self.asked >= self.spec.trials:
                return Searcher.FINISHED
            self._ask()
        number, seed = self.pending_seeds.popleft()
        self.trial_map[trial_id] = (number, seed)
        return {**self.spec.fixed, **self.configs[number], "seed": seed, "optuna_trial": number}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.trial_map:
            self.histories.setdefault(trial_id, []).append(
                {o.metric: result[o.metric] for o in self.spec.objectives if o.metric in result})

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.trial_map:
            return  # a baseline, or a trial from before a lost searcher save
        number, seed = self.trial_map.pop(trial_id)
        history = self.histories.pop(trial_id, [])
        values = None if error or not history else [
            objective_value(history, o.metric, self.spec.last_k) for o in self.spec.objectives]
        self.done.setdefault(number, {})[seed] = values
        if len(self.done[number]) == len(self.spec.seeds):
            self._tell(number)

    def _tell(self, number: int) -> None:
        runs = [v for v in self.done[number].values() if v is not None]
        if not runs:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            return
        means = [sum(r[i] for r in runs) / len(runs) for i in range(len(runs[0]))]
        self.study.tell(number, means if len(means) > 1 else means[0])

    # ---- persistence (Tune calls these with the experiment state) ------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_study"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("sampler_seed", self.spec.sampler_seed)  # older states
        self._study = None

    def save(self, checkpoint_path: str) -> None:
        """The searcher's state as JSON (data, never code; Tune's own files are pickles)."""
        state = {
            "version": 1, "spec": self.spec.raw, "storage_url": self.storage_url,
            "study_name": self.study_name, "baselines": list(self.baselines),
            "pending_seeds": [list(p) for p in self.pending_seeds],
            "configs": {str(n): c for n, c in self.configs.items()},
            "trial_map": {t: list(p) for t, p in self.trial_map.items()},
            "histories": self.histories,
            "done": {str(n): {str(s): v for s, v in d.items()} for n, d in self.done.items()},
            "asked": self.asked, "sampler_seed": self.sampler_seed,
        }
        tmp = f"{checkpoint_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            blob = fh.read()
        try:
            s = json.loads(blob)
        except (UnicodeDecodeError, json.JSONDecodeError):
            # A folder made before the JSON state: its pickle. Unpickling runs whatever the
            # file says -- resume only folders you trust (docs/reliability.md).
            self.__dict__.update(pickle.loads(blob))
            self.__dict__.setdefault("sampler_seed", self.spec.sampler_seed)
            return
        self.spec = parse_spec(s["spec"])
        self.storage_url, self.study_name = s["storage_url"], s["study_name"]
        self.baselines = deque(s["baselines"])
        self.pending_seeds = deque((int(n), int(sd)) for n, sd in s["pending_seeds"])
        self.configs = {int(n): c for n, c in s["configs"].items()}
        self.trial_map = {t: (int(p[0]), int(p[1])) for t, p in s["trial_map"].items()}
        self.histories = s["histories"]
        self.done = {int(n): {int(sd): v for sd, v in d.items()} for n, d in s["done"].items()}
        self.asked, self.sampler_seed = int(s["asked"]), int(s["sampler_seed"])
        self._study = None
        self._study = None
