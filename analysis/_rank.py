"""Ranking schedules by train–test gap closure (pure functions on DataFrames).

The closure rule itself -- matching keys, the epoch window, the formula, the undefined case --
is :mod:`trainables.closure`, shared with the searcher and the tracker. Here:

* Per trial run: its window means, and :func:`trainables.closure.compare` against its matched
  baselines on the **validation** split (what the search selected on) and the **test** split
  (the held-out reading): ``val_closure``, ``test_closure``, gap reductions, Δ accuracy, Δ CE.
* A **schedule**: family + parameters + α + batch size. Its seeds are aggregated: mean values,
  95% percentile-bootstrap intervals of the mean (NaN for one seed), ``n`` seeds.
* **Selection on validation**: schedules are ordered by the study's selection metric
  (``val_closure`` unless the study searched ``val_gap_reduction``), schedules that break the
  study's guards (mean ``val_acc_delta < −max_acc_drop`` or ``val_ce_delta > max_ce_rise``)
  after the feasible ones. The test columns are only read, never used to order.
* ``acc_drop``: Δ test accuracy below ``−acc_tolerance`` (a reading). The Pareto front of
  (validation closure, Δ validation accuracy) is marked.
* Per schedule also: DPI violation rate (epochs with ``dpi_margin < 0`` / epochs), median
  saturation epoch of ``I(Y;Ŷ)`` (the study stopper's criterion), mean final ``I(Y;Ŷ)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from trainables.closure import (
    COMPARISON_KEYS,
    closing_side,
    compare,
    last_k_window,
    match_key,
    window_mean,
    within_guards,
)
from trainables.closure import MATCH_KEYS as _MATCH
from trainables.records import DEFAULT_LAST_K, OPTIONAL_RECORD_KEYS, RECORD_KEYS
from trainables.saturation import saturation_epoch

__all__ = ["trial_table", "match_baselines", "rank_schedules", "bootstrap_ci", "pareto_front",
           "MATCH_KEYS", "SELECTION_METRICS", "Selection"]

MATCH_KEYS = tuple(f"p.{k}" for k in _MATCH)  # the rule's keys as this package's columns
SELECTION_METRICS = ("val_closure", "val_gap_reduction")


class Selection(NamedTuple):
    """How schedules are selected: the validation metric and the study's guards."""

    metric: str = "val_closure"
    max_acc_drop: float | None = None
    max_ce_rise: float | None = None

    def feasible(self, val_acc_delta: float, val_ce_delta: float) -> bool:
        return within_guards(val_acc_delta, val_ce_delta, self.max_acc_drop, self.max_ce_rise)
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
    records = _records(history)
    for run in runs.to_dict("records"):
        h = records.get(run["run_id"])
        name = run.get("trial_id") or run["run_id"]
        if run.get("status") == "FAILED":
            notes.append(f"trial {name}: failed, left out")
            continue
        if run.get("status") in ("KILLED", "RUNNING", "SCHEDULED"):
            notes.append(f"trial {name}: unfinished ({run['status']}), left out")
            continue
        missing = [k for k in _REQUIRED if not h or all(_absent(r.get(k)) for r in h)]
        if missing or not h:
            notes.append(f"trial {name}: missing metrics {missing[:4]}, left out")
            continue
        window = last_k_window(h, last_k)  # the one last-k rule (trainables.closure)
        sat = saturation_epoch([r["mi_y_yhat"] for r in h], [r["mi_grad_norm"] for r in h],
                               **(saturation or {}))
        rows.append({
            **{k: v for k, v in run.items() if k.startswith("p.") or k in (
                "run_id", "trial_id", "baseline", "study_id", "schedule", "config", "phase",
                "enqueued", "pruned")},
            "window": window, "epochs_done": len(h),
            **{k: window_mean(h, k, window) for k in ("gap", "test_acc", "train_ce",
                                                       "test_ce")},
            "final_mi": float(h[-1]["mi_y_yhat"]),
            "dpi_violation_rate": sum(1 for r in h if r["dpi_margin"] < 0) / len(h),
            "saturation_epoch": float("nan") if sat is None else float(sat),
        })
    return pd.DataFrame(rows), notes


def _records(history: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """run_id -> its records in epoch order (one conversion of the whole frame: per-group
    conversions cost a millisecond each, seconds at a thousand runs)."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not history.empty:
        for r in history.sort_values(["run_id", "epoch"]).to_dict("records"):
            out.setdefault(r["run_id"], []).append(r)
    return out


def _absent(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _key_of(row: dict[str, Any]) -> tuple[str, ...]:
    return match_key({k[2:]: row.get(k) for k in MATCH_KEYS})


def match_baselines(trials: pd.DataFrame, history: pd.DataFrame,
                    last_k: int = DEFAULT_LAST_K) -> pd.DataFrame:
    """Searched trials with every ``trainables.closure.compare`` value against their matched
    baselines (same window), on validation and test."""
    if trials.empty or trials.baseline.all():
        empty = trials.iloc[0:0]
        return empty.assign(matched=[], **{k: [] for k in (*COMPARISON_KEYS, "gap_baseline",
                                                            "delta_test_acc", "delta_val_acc")})
    records = _records(history)
    base: dict[tuple[str, ...], list[str]] = {}
    for row in trials[trials.baseline].to_dict("records"):
        base.setdefault(_key_of(row), []).append(row["run_id"])
    out = trials[~trials.baseline].copy()
    comps, matched = [], []
    for row in out.to_dict("records"):
        ids = base.get(_key_of(row), [])
        matched.append(bool(ids))
        comps.append(compare(records.get(row["run_id"], []),
                             [records.get(i, []) for i in ids], last_k))
    out["matched"] = matched
    for k in (comps[0] if comps else {}):
        out[k] = [c[k] for c in comps]
    # the test split's older names, kept for readers of earlier rankings
    out["gap_baseline"], out["delta_test_acc"] = out.test_gap_baseline, out.test_acc_delta
    out["delta_val_acc"] = out.val_acc_delta
    return out


def _mean_ci(values: Any, n_boot: int, seed: int) -> tuple[float, float, float, int]:
    vals = [float(v) for v in values if not math.isnan(float(v))]
    lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
    return (float(np.mean(vals)) if vals else float("nan")), lo, hi, len(vals)


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    """Mean over a schedule's seeds, NaN counted as pandas' ``Series.mean`` does (skipped)."""
    vals = [float(r[key]) for r in rows if not _absent(r.get(key))]
    return sum(vals) / len(vals) if vals else float("nan")


def _median(rows: list[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if not _absent(r.get(key))]
    return float(np.median(vals)) if vals else float("nan")


def _schedule_row(label: str, grp: list[dict[str, Any]], selection: Selection,
                  acc_tolerance: float, n_boot: int, seed: int) -> dict[str, Any]:
    """One schedule's row from its seeds' rows (plain dicts: per-group pandas calls cost
    seconds at a thousand schedules)."""
    row: dict[str, Any] = {"schedule": label, "family": grp[0]["p.transition.family"]}
    for split in ("val", "test"):
        mean, lo, hi, n = _mean_ci([r[f"{split}_closure"] for r in grp], n_boot, seed)
        row.update({f"{split}_closure": mean, f"{split}_ci_low": lo, f"{split}_ci_high": hi})
        red, rlo, rhi, _ = _mean_ci([r[f"{split}_gap_reduction"] for r in grp], n_boot, seed)
        row.update({f"{split}_gap_reduction": red, f"{split}_red_ci_low": rlo,
                    f"{split}_red_ci_high": rhi})
        row[f"n_{split}"] = n
    has = any(r["matched"] for r in grp)
    nan = float("nan")
    for key, src in (("delta_train_ce", "train_ce_delta"), ("delta_test_ce", "test_ce_delta")):
        mean, lo, hi, _ = _mean_ci([r[src] for r in grp], n_boot, seed)
        row.update({key: mean if has else nan, f"{key}_ci_low": lo, f"{key}_ci_high": hi})
    # how the test gap closed (trainables.closure.closing_side): below = train CE up
    row["closed_from"] = closing_side(row["delta_train_ce"], row["delta_test_ce"])
    row.update({
        "n_seeds": len(grp), "n_unmatched": sum(1 for r in grp if not r["matched"]),
        "delta_val_acc": _mean(grp, "val_acc_delta") if has else nan,
        "delta_val_ce": _mean(grp, "val_ce_delta") if has else nan,
        "delta_test_acc": _mean(grp, "test_acc_delta") if has else nan,
        "gap": _mean(grp, "test_gap"), "gap_baseline": _mean(grp, "test_gap_baseline"),
        "val_gap": _mean(grp, "val_gap"), "test_acc": _mean(grp, "test_acc"),
        "dpi_violation_rate": _mean(grp, "dpi_violation_rate"),
        "saturation_epoch": _median(grp, "saturation_epoch"),
        "final_mi": _mean(grp, "final_mi"),
        "enqueued": any(not _absent(r.get("enqueued")) and bool(r["enqueued"]) for r in grp),
        "pruned": any(not _absent(r.get("pruned")) and bool(r["pruned"]) for r in grp),
        "run_ids": [r["run_id"] for r in sorted(grp, key=_seed_order)],
    })
    row["acc_drop"] = bool(row["delta_test_acc"] < -acc_tolerance) if has else False
    # a pruned schedule trained part of its epochs: never a candidate for confirm, export, the
    # UI's top schedules or replay's top k, whatever its early values say
    row["feasible"] = bool(has and not row["pruned"]
                           and selection.feasible(row["delta_val_acc"], row["delta_val_ce"]))
    return row


def _seed_order(row: dict[str, Any]) -> tuple[bool, Any]:
    seed = row.get("p.seed")
    return _absent(seed), (0 if _absent(seed) else seed)


def rank_schedules(matched: pd.DataFrame, acc_tolerance: float = 0.02, n_boot: int = 10_000,
                   seed: int = 0, selection: Selection | None = None) -> pd.DataFrame:
    """One row per schedule, selected on validation: feasible schedules first, then by the
    selection metric (best first); schedules without a baseline last."""
    selection = selection or Selection()
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in matched.to_dict("records"):  # one conversion; groups in first-seen order
        groups.setdefault(str(r["schedule"]), []).append(r)
    rows = [_schedule_row(label, grp, selection, acc_tolerance, n_boot, seed)
            for label, grp in groups.items()]
    ranked = pd.DataFrame(rows)
    if ranked.empty:
        return ranked
    ranked["pareto"] = pareto_front(ranked.val_closure, ranked.delta_val_acc)
    ranked["_nan"] = ranked[selection.metric].isna()
    # a pruned configuration's values are over its early epochs: never above a finished one
    ranked = ranked.sort_values(["_nan", "pruned", "feasible", selection.metric],
                                ascending=[True, True, False, False], kind="stable")
    return ranked.drop(columns="_nan").reset_index(drop=True)
