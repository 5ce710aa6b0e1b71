"""The confirmation table: the search's top schedules re-measured on fresh seeds.

Pure functions on the two phases' analyses (``analyze(..., phase="search")`` and
``phase="confirm"``), so a test can check every number against the records. Per schedule:

* in search: the selection value on validation, and the test value read beside it;
* confirmed: the same metric on the **test** split over the fresh seeds, mean and 95%
  bootstrap interval (matched baselines with the same fresh seeds, ``trainables.closure``);
* ``shrinkage`` = in-search validation value − confirmed test value (what selection among many
  noisy estimates, and the split, promised beyond what held);
* Δ test accuracy on the fresh seeds and a verdict line.

Over the confirmed schedules: Spearman's rank correlation between the in-search validation
value and the confirmed test value, for closure and for gap reduction -- whether the selection
transferred, and which of the two predicts better.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ._rank import bootstrap_ci

__all__ = ["ConfirmInfo", "get_confirm_info", "spearman", "verdict", "format_confirm"]

_METRICS = ("closure", "gap_reduction")


class ConfirmInfo(NamedTuple):
    table: pd.DataFrame  # one row per confirmed schedule, in the search's order
    metric: str  # the selection metric (val_closure | val_gap_reduction)
    spearman: dict[str, float]  # metric -> rank correlation (search val vs confirmed test)
    seeds: list[int]  # the fresh seeds


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN below three pairs."""
    a = pd.Series(np.asarray(x, dtype=float))
    b = pd.Series(np.asarray(y, dtype=float))
    ok = a.notna() & b.notna()
    if ok.sum() < 3:
        return math.nan
    return float(a[ok].rank().corr(b[ok].rank()))


def verdict(low: float, mean: float, delta_acc: float, max_acc_drop: float) -> str:
    """One line: does the schedule close the gap on fresh seeds without losing accuracy?"""
    if not math.isfinite(mean):
        return "no verdict: no matched confirmation runs"
    acc = "" if not delta_acc < -max_acc_drop else \
        f", but loses {-100 * delta_acc:.1f} accuracy points"
    if math.isfinite(low) and low > 0:
        return f"closes the gap on fresh seeds (95% CI above 0){acc}"
    if mean > 0:
        return f"inconclusive: positive on average, 95% CI includes 0{acc}"
    return f"does not close the gap on fresh seeds{acc}"


def _confirmed(matched: pd.DataFrame, schedule: str, metric: str, n_boot: int
               ) -> tuple[float, float, float, int, float]:
    grp = matched[matched.schedule == schedule]
    vals = [float(v) for v in grp.get(f"test_{metric}", pd.Series(dtype=float))
            if not math.isnan(float(v))]
    lo, hi = bootstrap_ci(vals, n_boot=n_boot)
    mean = float(np.mean(vals)) if vals else math.nan
    acc = float(grp.test_acc_delta.mean()) if len(grp) else math.nan
    return mean, lo, hi, len(vals), acc


def get_confirm_info(search_ranking: pd.DataFrame, confirm_matched: pd.DataFrame,
                     schedules: list[str], metric: str, seeds: list[int],
                     max_acc_drop: float = 0.01, n_boot: int = 10_000) -> ConfirmInfo:
    short = metric.removeprefix("val_")
    rows = []
    for label in schedules:
        found = search_ranking[search_ranking.schedule == label]
        s = found.iloc[0] if not found.empty else None
        row: dict[str, Any] = {"schedule": label}
        for m in _METRICS:
            row[f"search_val_{m}"] = float(s[f"val_{m}"]) if s is not None else math.nan
            row[f"search_test_{m}"] = float(s[f"test_{m}"]) if s is not None else math.nan
            mean, lo, hi, n, acc = _confirmed(confirm_matched, label, m, n_boot)
            row.update({f"confirmed_test_{m}": mean, f"confirmed_{m}_ci_low": lo,
                        f"confirmed_{m}_ci_high": hi})
            row[f"shrinkage_{m}"] = row[f"search_val_{m}"] - mean
            row["n_confirmed"], row["confirmed_delta_test_acc"] = n, acc
        row["verdict"] = verdict(row[f"confirmed_{short}_ci_low"],
                                 row[f"confirmed_test_{short}"],
                                 row["confirmed_delta_test_acc"], max_acc_drop)
        rows.append(row)
    table = pd.DataFrame(rows)
    rho = {m: spearman(table[f"search_val_{m}"], table[f"confirmed_test_{m}"])
           if not table.empty else math.nan for m in _METRICS}
    return ConfirmInfo(table, metric, rho, list(seeds))


def format_confirm(info: ConfirmInfo) -> str:
    """The table a terminal shows, then the verdicts and the transfer line."""
    m = info.metric.removeprefix("val_")
    cols = ["schedule", f"search_val_{m}", f"search_test_{m}", f"confirmed_test_{m}",
            f"confirmed_{m}_ci_low", f"confirmed_{m}_ci_high", f"shrinkage_{m}",
            "confirmed_delta_test_acc", "n_confirmed"]
    t = info.table[cols] if not info.table.empty else pd.DataFrame(columns=cols)
    with pd.option_context("display.width", 220, "display.max_colwidth", 40,
                           "display.float_format", "{:.4f}".format):
        lines = [f"confirmation on fresh seeds {info.seeds} (selected by {info.metric} on "
                 f"validation; confirmed on test):", str(t.to_string(index=False)), ""]
    for row in info.table.to_dict("records"):
        lines.append(f"  {row['schedule']}: {row['verdict']}")
    rho = ", ".join(f"{k} {v:+.2f}" if math.isfinite(v) else f"{k} n/a"
                    for k, v in info.spearman.items())
    lines.append(f"transfer (Spearman, in-search validation vs confirmed test): {rho}")
    return "\n".join(lines)
