"""The study's Tune schedulers and stopper: which trial goes on after an epoch.

* :class:`ClosurePruner` (``scheduler: closure``): the closure-aware pruner
  (``trainables.pruning``, the rule ``mistudy replay`` proves on recorded studies);
* :class:`BaselineSafeASHA` (``scheduler: asha``): Tune's ASHA, which never stops a baseline.
  ASHA's rungs compare trials in the order they arrive, so an ASHA study does not repeat
  across finishing orders (docs/reliability.md);
* :class:`SaturationStopper` (``stopper``): ends a trial once I(Y;Ŷ) has saturated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune import Stopper
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from trainables.fileio import atomic_write_text
from trainables.pruning import (
    PruneRules,
    decide,
    earlier_values,
    mean_scores,
    objective_score,
    read_decisions,
)
from trainables.records import BASELINE_KEY, ENQUEUED_KEY, PHASE_KEY
from trainables.saturation import saturation_epoch

from ._experiments import read_results, read_trials
from ._folder import Location

__all__ = ["SaturationStopper", "BaselineSafeASHA", "ClosurePruner"]


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
    the matched CE baselines at the same epochs (``trainables.pruning.decide``). A
    configuration is judged once every seed has reached an epoch (the mean over seeds), and
    pruned whole. Baselines, enqueued configurations and confirmation runs are never stopped.
    A seed that runs ahead of the others is stopped at its next result after the decision
    (unless it has finished; measured: 2-3% of a study's searched epochs, docs/performance.md
    §2c).

    **Repeatable**: with the ordered search (``sampler_lag`` L) the median rule compares
    configuration k with configurations 0..k-L only (``trainables.pruning.earlier_values``),
    all finished before k was asked, and every baseline finished before the first sampled
    configuration: a decision depends on the configuration's own records and those fixed ones,
    never on which trial reported first.

    Every decision is written to the folder's ``pruning.json`` before the trial is stopped
    (Tune saves no scheduler state): a resumed study reads it back and keeps each decision;
    records a resumed trial does not report again -- and a grown study's earlier experiments
    -- are read from the trials' ``result.json``. The folder comes from the command that made
    or restored it, never from the pickle."""

    def __init__(self, rules: dict[str, Any], seeds: int, where: Location,
                 lag: int | None = None, objective: str | None = None,
                 experiments: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.rules_raw, self.seeds = dict(rules), seeds
        self.path, self.ray = where.pruning, where.ray  # the decisions file, Tune's folder
        self.lag, self.objective = lag, objective
        # a grown study's earlier experiments, by name (in the folder's ray/, wherever it is)
        self.experiments = tuple(experiments)
        self._fresh()

    def _fresh(self) -> None:
        self.records: dict[str, dict[int, dict[str, Any]]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.members: dict[int, set[str]] = {}
        self.state: dict[str, Any] | None = None
        self.read_dirs: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"rules_raw": self.rules_raw, "seeds": self.seeds, "path": self.path,
                "ray": self.ray, "lag": self.lag, "objective": self.objective,
                "experiments": self.experiments}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"lag": None, "objective": None, "experiments": (),  # older saves
                              "ray": None})  # relocate() sets it before the fit
        self.__dict__.update(state)
        self._fresh()

    def relocate(self, where: Location) -> None:
        """The folder as the restoring command found it: a moved folder's decisions move with
        it."""
        self.path, self.ray = where.pruning, where.ray

    @property
    def rules(self) -> PruneRules:
        raw = dict(self.rules_raw)
        if "rungs" in raw:
            raw["rungs"] = tuple(raw["rungs"])
        return PruneRules(**raw)

    def _load(self) -> dict[str, Any]:
        if self.state is None:
            self.state = read_decisions(Path(self.path))
        return self.state

    def _save(self) -> None:
        atomic_write_text(Path(self.path), json.dumps(self._load(), indent=1))

    def _read_experiments(self, trial: Any) -> None:
        """Once per experiment: the records of trials that will not report them again (a
        resumed study's finished baselines, the epochs before a restored trial's restart, a
        grown study's earlier experiments with their baselines)."""
        ray = Path(self.ray)
        for exp in (*(str(ray / n) for n in self.experiments), str(Path(str(trial.path)).parent)):
            if exp in self.read_dirs:
                continue
            self.read_dirs.add(exp)
            for t in read_trials(Path(exp)):
                self.configs.setdefault(t.trial_id, t.config)
                recs = self.records.setdefault(t.trial_id, {})
                for r in read_results(t.path):
                    recs.setdefault(int(r["epoch"]), r)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """FIFO, except that a trial of a configuration pruned before it ran -- a seed a kill
        caught right after the decision, restored by ``--resume`` -- is stopped unstarted:
        a pruned configuration is never trained again."""
        from ray.tune.experiment import Trial

        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING and self._pruned_before(trial.config):
                tune_controller.stop_trial(trial)
        return super().choose_trial_to_run(tune_controller)

    def _pruned_before(self, cfg: dict[str, Any]) -> bool:
        if cfg.get(PHASE_KEY) or cfg.get(BASELINE_KEY) or "optuna_trial" not in cfg:
            return False
        return str(int(cfg["optuna_trial"])) in self._load()["pruned"]

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        from trainables.closure import match_key

        cfg = trial.config
        if cfg.get(PHASE_KEY) or "epoch" not in result:
            return str(TrialScheduler.CONTINUE)
        self._read_experiments(trial)
        self.configs[trial.trial_id] = cfg
        self.records.setdefault(trial.trial_id, {})[int(result["epoch"])] = dict(result)
        if cfg.get(BASELINE_KEY) or cfg.get(ENQUEUED_KEY) or "optuna_trial" not in cfg:
            return str(TrialScheduler.CONTINUE)
        number, st = int(cfg["optuna_trial"]), self._load()
        if str(number) in st["pruned"]:
            return str(TrialScheduler.STOP)
        members = self.members.setdefault(number, set())
        members.update(t for t, c in self.configs.items()
                       if not c.get(BASELINE_KEY) and c.get("optuna_trial") == number
                       and not c.get(PHASE_KEY))
        epochs = len(self.records[trial.trial_id])
        if len(members) < self.seeds or any(len(self.records.get(t, {})) < epochs
                                            for t in members):
            return str(TrialScheduler.CONTINUE)  # judged when the last seed gets here
        base = {match_key(c): list(self.records.get(t, {}).values())
                for t, c in self.configs.items() if c.get(BASELINE_KEY) and not c.get(PHASE_KEY)}
        pairs = [(sorted(self.records[t].values(), key=lambda r: r["epoch"]),
                  base.get(match_key(self.configs[t]))) for t in sorted(members)]
        rules = self.rules
        earlier = {epochs: earlier_values(st["reached"], epochs, number, self.lag)}
        rule = decide(rules, pairs, epochs, earlier)
        scores = mean_scores(pairs, epochs, rules.window)
        if rule is not None:
            st["pruned"][str(number)] = [epochs, rule, objective_score(scores, self.objective)]
            self._save()
            return str(TrialScheduler.STOP)
        value = objective_score(scores, "val_gap_reduction")  # what the median rule compares
        passed = st["passed"].setdefault(str(number), [])
        if epochs in rules.rungs and epochs not in passed and value is not None:
            passed.append(epochs)
            reached = st["reached"].setdefault(str(epochs), {})
            if isinstance(reached, dict):
                reached[str(number)] = value
            else:  # a folder from before the order rule kept a plain list
                reached.append(value)
            self._save()
        return str(TrialScheduler.CONTINUE)
