"""The confirmation table: the search's top schedules re-measured on fresh seeds.

Pure functions on the two phases' analyses (``analyze(..., phase="search")`` and
``phase="confirm"``), so a test can check every number against the records. Per schedule:

* in search: the selection value on validation, and the test value read beside it;
* confirmed: the same metric on the **test** split over the fresh seeds, mean and 95%
  bootstrap interval (matched baselines with the same fresh seeds, ``trainables.closure``);
* ``shrinkage`` = in-search validation value − confirmed test value (what selection among many
  noisy estimates, and the split, promised beyond what held);
* Δ test accuracy, Δ train CE and Δ test CE on the fresh seeds (95% intervals), the side the
  test gap closed from (``trainables.closure.closing_side``) and a verdict line.

Over the confirmed schedules: Spearman's rank correlation between the in-search validation
value and the confirmed test value, for closure and for gap reduction -- whether the selection
transferred, and which of the two predicts better.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from trainables.closure import closing_side

from ._rank import bootstrap_ci
from ._text import fixed_width

__all__ = ["ConfirmInfo", "get_confirm_info", "spearman", "verdict", "format_confirm",
           "best_confirmed_line"]

_METRICS = ("closure", "gap_reduction")


class ConfirmInfo(NamedTuple):
    table: pd.DataFrame  # one row per confirmed schedule, in the search's order
    metric: str  # the selection metric (val_closure | val_gap_reduction)
    spearman: dict[str, float]  # metric -> rank correlation (search val vs confirmed test)
    seeds: list[int]  # the fresh seeds
    data_seeds: list[int] | None = None  # the split draw paired with each seed (None: the
    # study's own draw)


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN below three pairs."""
    a = pd.Series(np.asarray(x, dtype=float))
    b = pd.Series(np.asarray(y, dtype=float))
    ok = a.notna() & b.notna()
    if ok.sum() < 3:
        return math.nan
    return float(a[ok].rank().corr(b[ok].rank()))


_SIDE_TEXT = {"below": " from below (train CE up)", "above": " from above (test CE down)",
              "both": " from both sides (train CE up, test CE down)"}


def verdict(low: float, mean: float, delta_acc: float, max_acc_drop: float,
            side: str = "", fresh: str = "fresh seeds") -> str:
    """One line: does the schedule close the gap on fresh seeds without losing accuracy, and
    from which side (``trainables.closure.closing_side``)?"""
    if not math.isfinite(mean):
        return "no verdict: no matched confirmation runs"
    acc = "" if not delta_acc < -max_acc_drop else \
        f", but loses {-100 * delta_acc:.1f} accuracy points"
    if math.isfinite(low) and low > 0:
        return f"closes the gap{_SIDE_TEXT.get(side, '')} on {fresh} (95% CI above 0){acc}"
    if mean > 0:
        return f"inconclusive: positive on average, 95% CI includes 0{acc}"
    return f"does not close the gap on {fresh}{acc}"


def _mean_ci(grp: pd.DataFrame, column: str, n_boot: int) -> tuple[float, float, float, int]:
    vals = [float(v) for v in grp.get(column, pd.Series(dtype=float))
            if not math.isnan(float(v))]
    lo, hi = bootstrap_ci(vals, n_boot=n_boot)
    return (float(np.mean(vals)) if vals else math.nan), lo, hi, len(vals)


def get_confirm_info(search_ranking: pd.DataFrame, confirm_matched: pd.DataFrame,
                     schedules: list[str], metric: str, seeds: list[int],
                     max_acc_drop: float = 0.01, n_boot: int = 10_000,
                     data_seeds: list[int] | None = None) -> ConfirmInfo:
    short = metric.removeprefix("val_")
    fresh = "fresh seeds and split draws" if data_seeds else "fresh seeds"
    rows = []
    for label in schedules:
        found = search_ranking[search_ranking.schedule == label]
        s = found.iloc[0] if not found.empty else None
        grp = confirm_matched[confirm_matched.schedule == label]
        row: dict[str, Any] = {"schedule": label}
        for m in _METRICS:
            row[f"search_val_{m}"] = float(s[f"val_{m}"]) if s is not None else math.nan
            row[f"search_test_{m}"] = float(s[f"test_{m}"]) if s is not None else math.nan
            mean, lo, hi, n = _mean_ci(grp, f"test_{m}", n_boot)
            row.update({f"confirmed_test_{m}": mean, f"confirmed_{m}_ci_low": lo,
                        f"confirmed_{m}_ci_high": hi})
            row[f"shrinkage_{m}"] = row[f"search_val_{m}"] - mean
            row["n_confirmed"] = n
        row["confirmed_delta_test_acc"] = float(grp.test_acc_delta.mean()) if len(grp) \
            else math.nan
        for key, col in (("train_ce", "train_ce_delta"), ("test_ce", "test_ce_delta")):
            mean, lo, hi, _ = _mean_ci(grp, col, n_boot)
            row.update({f"confirmed_delta_{key}": mean, f"confirmed_delta_{key}_ci_low": lo,
                        f"confirmed_delta_{key}_ci_high": hi})
        row["closed_from"] = closing_side(row["confirmed_delta_train_ce"],
                                          row["confirmed_delta_test_ce"])
        row["verdict"] = verdict(row[f"confirmed_{short}_ci_low"],
                                 row[f"confirmed_test_{short}"],
                                 row["confirmed_delta_test_acc"], max_acc_drop,
                                 row["closed_from"], fresh)
        rows.append(row)
    table = pd.DataFrame(rows)
    rho = {m: spearman(table[f"search_val_{m}"], table[f"confirmed_test_{m}"])
           if not table.empty else math.nan for m in _METRICS}
    return ConfirmInfo(table, metric, rho, list(seeds),
                       None if data_seeds is None else list(data_seeds))


def _ci(row: dict[str, Any], lo: str, hi: str) -> str:
    return "n/a" if not math.isfinite(row[lo]) else f"[{row[lo]:+.3f},{row[hi]:+.3f}]"


def fresh_text(info: ConfirmInfo) -> str:
    """Which seeds (and split draws) the confirmation ran on, in words."""
    if not info.data_seeds:
        return f"fresh seeds {info.seeds} (the study's split draw)"
    pairs = ", ".join(f"{s}/{d}" for s, d in zip(info.seeds, info.data_seeds, strict=False))
    return f"fresh seeds and split draws (seed/data_seed {pairs})"


WIDE = ("search_val_{m}", "search_test_{m}", "confirmed_test_{m}", "confirmed_{m}_ci_low",
        "confirmed_{m}_ci_high", "shrinkage_{m}", "confirmed_delta_test_acc",
        "confirmed_delta_train_ce", "confirmed_delta_train_ce_ci_low",
        "confirmed_delta_train_ce_ci_high", "confirmed_delta_test_ce",
        "confirmed_delta_test_ce_ci_low", "confirmed_delta_test_ce_ci_high", "closed_from",
        "n_confirmed")


def _wide(info: ConfirmInfo, m: str) -> str:
    """Every column, 4 decimals (``confirm.md`` and the MLflow parent's ``confirm.txt``)."""
    cols = ["schedule", *(c.format(m=m) for c in WIDE)]
    rows = [[str(r["schedule"]), *(f"{v:.4f}" if isinstance(v, float) else str(v)
                                   for v in (r[c] for c in cols[1:]))]
            for r in info.table.to_dict("records")]
    return fixed_width(cols, rows, left=(0,), width=10_000)


def format_confirm(info: ConfirmInfo, wide: bool = False) -> str:
    """The table a terminal shows (120 columns; ``wide``: every column), then the verdicts
    and the transfer line."""
    m = info.metric.removeprefix("val_")
    head = ["schedule", "search_val", "confirmed", "95% CI", "shrink", "Δacc", "Δtrain_ce",
            "Δtest_ce", "n"]
    rows = [[str(r["schedule"]), f"{r[f'search_val_{m}']:+.3f}",
             f"{r[f'confirmed_test_{m}']:+.3f}",
             _ci(r, f"confirmed_{m}_ci_low", f"confirmed_{m}_ci_high"),
             f"{r[f'shrinkage_{m}']:+.3f}", f"{100 * r['confirmed_delta_test_acc']:+.1f}",
             f"{r['confirmed_delta_train_ce']:+.3f}", f"{r['confirmed_delta_test_ce']:+.3f}",
             str(r["n_confirmed"])] for r in info.table.to_dict("records")]
    table = _wide(info, m) if wide else fixed_width(head, rows, left=(0,))
    lines = [f"confirmation on {fresh_text(info)}:", table,
             f"search_val: {info.metric}, the selection on validation; confirmed: test_{m} "
             "on the fresh runs, 95% CI",
             "over seeds; shrink = search_val − confirmed. Δ: against the matched CE "
             "baselines on the same seeds and draws,", "acc in test accuracy points, CE in "
             "nats.", ""]
    for row in info.table.to_dict("records"):
        lines.append(f"  {row['schedule']}: {row['verdict']}")
    rho = ", ".join(f"{k} {v:+.2f}" if math.isfinite(v) else f"{k} n/a"
                    for k, v in info.spearman.items())
    lines.append(f"transfer (Spearman, in-search validation vs confirmed test): {rho}")
    return "\n".join(lines)


def best_confirmed_line(info: Any) -> str:
    """One line: the best confirmed schedule, its confirmed test value and interval, and the
    verdict ("" when nothing was confirmed)."""
    import math

    from ._table import interval, nats

    m = info.metric.removeprefix("val_")
    t = info.table.dropna(subset=[f"confirmed_test_{m}"])
    if t.empty:
        return ""
    best = t.sort_values(f"confirmed_test_{m}", ascending=False).iloc[0]
    unit = " nats" if m == "gap_reduction" else ""
    ok = math.isfinite(best[f"confirmed_{m}_ci_low"]) and best[f"confirmed_{m}_ci_low"] > 0
    return (f"Best confirmed schedule: {best.schedule}, test {m.replace('_', ' ')} "
            f"{nats(best[f'confirmed_test_{m}'])}{unit} "
            f"{interval(best[f'confirmed_{m}_ci_low'], best[f'confirmed_{m}_ci_high'])} "
            f"(95% CI, {int(best.n_confirmed)} fresh seeds): "
            f"{'confirmed' if ok else 'not confirmed'}.")
