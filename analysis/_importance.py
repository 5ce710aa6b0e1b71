"""Which hyperparameters drive validation closure: Optuna's importance evaluators on the stored
study's configurations.

Optuna's importance works on a study's objective; the searcher stores every configuration's
validation comparison (``val_closure``, ``val_gap_reduction``, ...) as user attributes, so any
of them can be the target, whatever the study was told. The search space is define-by-run:
a family's parameters exist only on that family's trials, and both evaluators need parameters
present on every trial. So importance is computed per **scope**:

* ``all``: every configuration, over the parameters they share (family, α, batch size);
* one scope per family with enough configurations: its own parameters plus α and batch size.

Each scope is evaluated with fANOVA (variance decomposition over a random forest) and
PED-ANOVA (how the top-quantile configurations' parameter distribution differs from all),
each normalized to sum to 1 within the scope.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import pandas as pd

__all__ = ["ImportanceInfo", "get_importance_info", "format_importance", "MIN_TRIALS"]

MIN_TRIALS = 5  # fewer configurations in a scope: no importance for it (too few to split)
EVALUATORS = ("fanova", "ped_anova")


class ImportanceInfo(NamedTuple):
    table: pd.DataFrame  # scope, param, fanova, ped_anova, n_trials (per scope, best first)
    target: str  # the user attribute evaluated (e.g. val_closure)
    skipped: list[str]  # scopes left out and why


def _usable(trials: Sequence[Mapping[str, Any]], target: str) -> list[Mapping[str, Any]]:
    out = []
    for t in trials:
        v = (t.get("user_attrs") or {}).get(target)
        if t.get("state") == "COMPLETE" and isinstance(v, (int, float)) and math.isfinite(v):
            out.append(t)
    return out


def _scope_study(trials: Sequence[Mapping[str, Any]], params: Sequence[str],
                 target: str) -> Any:
    """An in-memory study holding the scope's trials with the target as their value."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for t in trials:
        study.add_trial(optuna.trial.create_trial(
            params={p: t["params"][p] for p in params},
            distributions={p: t["distributions"][p] for p in params},
            value=float(t["user_attrs"][target])))
    return study


def _varied(trials: Sequence[Mapping[str, Any]], params: Sequence[str]) -> list[str]:
    """Parameters present on every trial and taking more than one value."""
    return [p for p in params if all(p in t["params"] for t in trials)
            and len({repr(t["params"][p]) for t in trials}) > 1]


def _evaluate(study: Any, params: list[str]) -> dict[str, dict[str, float]]:
    import optuna

    evaluators = {"fanova": optuna.importance.FanovaImportanceEvaluator(seed=0),
                  "ped_anova": optuna.importance.PedAnovaImportanceEvaluator()}
    out: dict[str, dict[str, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings
        for name, ev in evaluators.items():
            out[name] = dict(optuna.importance.get_param_importances(
                study, evaluator=ev, params=params))
    return out


def _scopes(trials: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[Any], list[str]]]:
    shared = ["family", "alpha", "batch_size"]
    scopes = {"all": (list(trials), _varied(trials, shared))}
    for fam in sorted({t["params"].get("family") for t in trials} - {None}):
        sub = [t for t in trials if t["params"].get("family") == fam]
        own = sorted({p for t in sub for p in t["params"] if p.startswith(f"{fam}.")})
        scopes[f"family={fam}"] = (sub, _varied(sub, [*own, "alpha", "batch_size"]))
    return scopes


def get_importance_info(trials: Sequence[Mapping[str, Any]],
                        target: str = "val_closure") -> ImportanceInfo:
    """Importance of each parameter for ``target`` per scope. ``trials``: dicts with
    ``state``, ``params``, ``distributions`` (Optuna distribution objects), ``user_attrs``
    (:func:`analysis._load.optuna_trials` reads them from a study folder or bundle)."""
    usable = _usable(trials, target)
    rows, skipped = [], []
    for scope, (sub, params) in _scopes(usable).items():
        if len(sub) < MIN_TRIALS or not params:
            skipped.append(f"{scope}: {len(sub)} configurations with {target}, "
                           f"{len(params)} varied parameters (need {MIN_TRIALS} and 1)")
            continue
        if len({float(t["user_attrs"][target]) for t in sub}) < 2:
            skipped.append(f"{scope}: {target} is the same on every configuration")
            continue
        scores = _evaluate(_scope_study(sub, params, target), params)
        for p in params:
            rows.append({"scope": scope, "param": p, "n_trials": len(sub),
                         **{e: float(scores[e].get(p, math.nan)) for e in EVALUATORS}})
    table = pd.DataFrame(rows, columns=["scope", "param", "n_trials", *EVALUATORS])
    if not table.empty:
        table = table.sort_values(["scope", "fanova"], ascending=[True, False],
                                  key=lambda s: s.map(_scope_order) if s.name == "scope" else s)
    return ImportanceInfo(table.reset_index(drop=True), target, skipped)


def _scope_order(scope: str) -> str:
    return "" if scope == "all" else scope


def format_importance(info: ImportanceInfo, fmt: str = "table") -> str:
    """The table as text (``table``), ``markdown`` or ``csv``."""
    df = info.table
    if fmt == "csv":
        return str(df.to_csv(index=False))
    if fmt == "markdown":
        head = "| scope | parameter | configurations | fANOVA | PED-ANOVA |\n|---|---|---|---|---|"
        body = [f"| {r.scope} | {r.param} | {r.n_trials} | {r.fanova:.3f} | {r.ped_anova:.3f} |"
                for r in df.itertuples()]
        return "\n".join([head, *body])
    text = (f"importance for {info.target} (fANOVA and PED-ANOVA, normalized per scope):\n"
            + (df.to_string(index=False, float_format="{:.3f}".format) if not df.empty
               else "  (no scope has enough configurations)"))
    if info.skipped:
        text += "\n" + "\n".join(f"  skipped {s}" for s in info.skipped)
    return text
