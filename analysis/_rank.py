"""Ranking schedules by train–test gap closure (pure functions on DataFrames).

Definitions:

* A trial's **gap** is ``test_ce − train_ce``, averaged over its last ``k`` epochs.
* Its **matched baseline**: the plain-CE trials (``constant``, ``c = 1``) of the same dataset,
  model, batch size, epochs and seed; their gap is taken over the *same* epochs as the trial's
  window (a trial stopped early is compared at equal training time), averaged if several.
* **Gap closure** ``= (gap_baseline − gap_trial) / gap_baseline``: 1 closes the gap, 0 changes
  nothing, negative widens it. Undefined (NaN, said so) when the baseline has no positive gap or
  no baseline matches -- never compared to another trial's baseline.
* A **schedule**: family + parameters + α + batch size. Its seeds are aggregated: mean closure,
  a 95% percentile-bootstrap interval of the mean (NaN for one seed), ``n`` seeds.
* **Guard**: ``delta_test_acc`` (trial − baseline, same window); schedules losing more than the
  tolerance are flagged ``acc_drop``. The Pareto front of (closure, delta_test_acc) is marked.
* Per schedule also: DPI violation rate (epochs with ``dpi_margin < 0`` / epochs), median
  saturation epoch of ``I(Y;Ŷ)`` (the study stopper's criterion), mean final ``I(Y;Ŷ)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from trainables.records import DEFAULT_LAST_K, OPTIONAL_RECORD_KEYS, RECORD_KEYS
from trainables.saturation import saturation_epoch

__all__ = ["trial_table", "match_baselines", "rank_schedules", "bootstrap_ci", "pareto_front",
           "MATCH_KEYS"]

MATCH_KEYS = ("p.dataset", "p.model", "p.batch_size", "p.epochs", "p.seed")
_REQUIRED = [k for k in RECORD_KEYS if k not in OPTIONAL_RECORD_KEYS]


def bootstrap_ci(values: Any, level: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean; (nan, nan) for fewer than two values."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def pareto_front(x: Any, y: Any) -> np.ndarray:
    """Mask of points not dominated when maximizing both ``x`` and ``y`` (NaN never on it)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    front = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        front[i] = not dominated.any()
    return front


def trial_table(runs: pd.DataFrame, history: pd.DataFrame, last_k: int = DEFAULT_LAST_K,
                saturation: dict[str, Any] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per usable trial run, and notes about the runs left out."""
    notes: list[str] = []
    rows = []
    groups = dict(tuple(history.groupby("run_id"))) if not history.empty else {}
    for run in runs.to_dict("records"):
        h = groups.get(run["run_id"])
        name = run.get("trial_id") or run["run_id"]
        if run.get("status") == "FAILED":
            notes.append(f"trial {name}: failed, left out")
            continue
        missing = [k for k in _REQUIRED if h is None or k not in h or h[k].isna().all()]
        if missing or h is None:
            notes.append(f"trial {name}: missing metrics {missing[:4]}, left out")
            continue
        h = h.sort_values("epoch")
        window = list(h.epoch.iloc[-last_k:])
        tail = h[h.epoch.isin(window)]
        sat = saturation_epoch(list(h.mi_y_yhat), list(h.mi_grad_norm), **(saturation or {}))
        rows.append({
            **{k: v for k, v in run.items() if k.startswith("p.") or k in (
                "run_id", "trial_id", "baseline", "study_id", "schedule", "config")},
            "window": tuple(int(e) for e in window), "epochs_done": len(h),
            "gap": tail.gap.mean(), "test_acc": tail.test_acc.mean(),
            "train_ce": tail.train_ce.mean(), "test_ce": tail.test_ce.mean(),
            "final_mi": float(h.mi_y_yhat.iloc[-1]),
            "dpi_violation_rate": float((h.dpi_margin < 0).mean()),
            "saturation_epoch": float("nan") if sat is None else float(sat),
        })
    return pd.DataFrame(rows), notes


def _window_mean(history: pd.DataFrame, run_ids: list[str], window: tuple[int, ...],
                 key: str) -> float:
    sub = history[history.run_id.isin(run_ids) & history.epoch.isin(window)]
    per_run = sub.groupby("run_id")[key].mean()
    return float(per_run.mean()) if len(per_run) else float("nan")


def match_baselines(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Searched trials with their matched baseline's gap and accuracy, closure and Δacc."""
    if trials.empty:
        return trials.assign(gap_baseline=[], closure=[], delta_test_acc=[], matched=[])
    base = trials[trials.baseline]
    out = trials[~trials.baseline].copy()
    gb, ab, matched = [], [], []
    for row in out.to_dict("records"):
        same = base
        for k in MATCH_KEYS:
            same = same[same[k] == row[k]]
        ids = list(same.run_id)
        matched.append(bool(ids))
        gb.append(_window_mean(history, ids, row["window"], "gap") if ids else float("nan"))
        ab.append(_window_mean(history, ids, row["window"], "test_acc") if ids
                  else float("nan"))
    out["gap_baseline"], out["acc_baseline"], out["matched"] = gb, ab, matched
    g = out.gap_baseline
    out["closure"] = np.where(g > 0, (g - out.gap) / g.where(g > 0), np.nan)
    out["delta_test_acc"] = out.test_acc - out.acc_baseline
    return out


def rank_schedules(matched: pd.DataFrame, acc_tolerance: float = 0.02, n_boot: int = 10_000,
                   seed: int = 0) -> pd.DataFrame:
    """One row per schedule, best mean closure first (schedules without a baseline last)."""
    rows = []
    for label, grp in matched.groupby("schedule", sort=False):
        closures = list(grp.closure.dropna())
        lo, hi = bootstrap_ci(closures, n_boot=n_boot, seed=seed)
        delta = float(grp.delta_test_acc.mean()) if grp.matched.any() else float("nan")
        rows.append({
            "schedule": label, "family": grp["p.transition.family"].iloc[0],
            "closure": float(np.mean(closures)) if closures else float("nan"),
            "ci_low": lo, "ci_high": hi, "n_seeds": len(closures),
            "n_unmatched": int((~grp.matched).sum()),
            "gap": float(grp.gap.mean()), "gap_baseline": float(grp.gap_baseline.mean()),
            "test_acc": float(grp.test_acc.mean()), "delta_test_acc": delta,
            "acc_drop": bool(delta < -acc_tolerance) if not math.isnan(delta) else False,
            "dpi_violation_rate": float(grp.dpi_violation_rate.mean()),
            "saturation_epoch": float(grp.saturation_epoch.median()),
            "final_mi": float(grp.final_mi.mean()),
            "run_ids": list(grp.sort_values("p.seed").run_id),
        })
    ranked = pd.DataFrame(rows)
    if ranked.empty:
        return ranked
    ranked["pareto"] = pareto_front(ranked.closure, ranked.delta_test_acc)
    ranked = ranked.sort_values("closure", ascending=False, na_position="last")
    return ranked.reset_index(drop=True)
