"""The one gap-closure rule: which baseline a trial is compared to, over which epochs, and how.

Torch-free and Ray-free on purpose: the searcher (the value Optuna is told), the tracker (the
MLflow columns), the ranking and ``confirm`` all compute closure here, so they cannot disagree.

Definitions (per trial run, against its matched cross-entropy baselines):

* **Matched baseline**: the plain-CE runs (``constant``, ``c = 1``) with the same
  :data:`MATCH_KEYS` values (dataset, model, batch size, epochs, seed, split draw).
* **Window**: the trial's last ``last_k`` recorded epochs. The baseline's values are taken over
  the *same* epochs (a trial stopped early is compared at equal training time); a baseline
  lacking one of them is left out; several matching baselines are averaged.
* For a split ``s`` in ``val``/``test``: the **gap** is ``s_ce − train_ce`` (window mean);
  ``s_closure = (gap_b − gap) / gap_b`` (1 closes the gap, 0 changes nothing, negative widens
  it); ``s_gap_reduction = gap_b − gap`` (nats, always defined); ``s_acc_delta = acc − acc_b``;
  ``s_ce_delta = ce − ce_b``; and once for both splits ``train_ce_delta = train_ce −
  train_ce_b``.
* **How a gap closed**: ``s_gap_reduction = train_ce_delta − s_ce_delta`` (an identity), so a
  reduction comes from below (train CE rises: the model fits its training set less) or from
  above (the split's CE falls: it generalizes better). :func:`closing_side` names it: the
  share ``max(train_ce_delta, 0) / (max(train_ce_delta, 0) + max(−s_ce_delta, 0))`` of the
  movement that is the train CE's; at least :data:`SIDE_SHARE` is "from below", at most
  ``1 − SIDE_SHARE`` "from above", between them "from both sides".
* **Undefined closure**: when the baseline's gap is not positive there is no gap to close, and
  ``s_closure`` is NaN (never a huge or sign-flipped ratio). Averages over seeds skip NaN
  closures; a configuration whose every seed is undefined has no closure (the searcher tells
  Optuna FAIL with that reason; the ranking shows NaN). ``s_gap_reduction`` stays defined.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["MATCH_KEYS", "SPLITS", "COMPARISON_KEYS", "SIDE_SHARE", "match_key",
           "last_k_problem", "guard_problem", "last_k_window", "window_mean", "last_k_mean",
           "closure", "compare", "mean_defined", "closing_side", "guard_values",
           "within_guards"]

MATCH_KEYS = ("dataset", "model", "batch_size", "epochs", "seed", "data_seed")
SPLITS = ("val", "test")
_GAP = {"val": "val_gap", "test": "gap"}  # record keys: s_ce − train_ce
COMPARISON_KEYS = tuple(f"{s}_{m}" for s in SPLITS
                        for m in ("closure", "gap_reduction", "acc_delta", "ce_delta",
                                  "gap", "gap_baseline")) + ("train_ce_delta",)
SIDE_SHARE = 0.75  # the share of the movement one side must carry to be named alone

Record = Mapping[str, Any]


def match_key(config: Mapping[str, Any]) -> tuple[str, ...]:
    """A run's matching key (values as text: ``128`` and ``128.0`` from different readers
    must match, so numbers are normalized)."""
    def text(v: Any) -> str:
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)
    return tuple(text(config.get(k)) for k in MATCH_KEYS)


def last_k_problem(value: Any) -> str | None:
    """What a last-k window allows when ``value`` breaks it, else None: the one rule for the
    spec's ``objective.last_k``, the ``--last-k`` flag and :func:`analysis.analyze`."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return None if ok else "an integer >= 1"


def last_k_window(records: Iterable[Record], last_k: int) -> tuple[int, ...]:
    """The last ``last_k`` epochs a run recorded."""
    return tuple(sorted({int(r["epoch"]) for r in records})[-last_k:])


def window_mean(records: Iterable[Record], key: str, window: Sequence[int]) -> float:
    """Mean of ``key`` over the epochs of ``window``; NaN unless every epoch is there."""
    return _indexed_mean({int(r["epoch"]): r for r in records}, key, window)


def _indexed_mean(by_epoch: Mapping[int, Record], key: str, window: Sequence[int]) -> float:
    """:func:`window_mean` over records already indexed by epoch (index a run once, read
    many keys: a ranking of a thousand runs reads each baseline dozens of times)."""
    if not window or any(e not in by_epoch or key not in by_epoch[e] for e in window):
        return math.nan
    return sum(float(by_epoch[e][key]) for e in window) / len(window)


def last_k_mean(records: Sequence[Record], key: str, last_k: int) -> float:
    """Mean of ``key`` over a run's last ``last_k`` epochs: a trial's final value."""
    return window_mean(records, key, last_k_window(records, last_k))


def closure(gap_baseline: float, gap: float) -> float:
    """``(gap_b − gap) / gap_b``; NaN when the baseline has no positive gap."""
    if not (math.isfinite(gap_baseline) and gap_baseline > 0) or not math.isfinite(gap):
        return math.nan
    return (gap_baseline - gap) / gap_baseline


def mean_defined(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


def _baseline_mean(baselines: Sequence[Mapping[int, Record]], key: str,
                   window: Sequence[int]) -> float:
    return mean_defined(_indexed_mean(b, key, window) for b in baselines)


def compare(trial: Sequence[Record], baselines: Sequence[Sequence[Record]],
            last_k: int) -> dict[str, float]:
    """Every :data:`COMPARISON_KEYS` value of one trial run against its matched baselines'
    records (NaN where no baseline covers the window)."""
    window = last_k_window(trial, last_k)
    own = {int(r["epoch"]): r for r in trial}
    bases = [{int(r["epoch"]): r for r in b} for b in baselines]
    out: dict[str, float] = {"train_ce_delta": _indexed_mean(own, "train_ce", window)
                             - _baseline_mean(bases, "train_ce", window)}
    for s in SPLITS:
        gap = _indexed_mean(own, _GAP[s], window)
        gap_b = _baseline_mean(bases, _GAP[s], window)
        acc_b = _baseline_mean(bases, f"{s}_acc", window)
        ce_b = _baseline_mean(bases, f"{s}_ce", window)
        out[f"{s}_gap"], out[f"{s}_gap_baseline"] = gap, gap_b
        out[f"{s}_closure"] = closure(gap_b, gap)
        out[f"{s}_gap_reduction"] = gap_b - gap
        out[f"{s}_acc_delta"] = _indexed_mean(own, f"{s}_acc", window) - acc_b
        out[f"{s}_ce_delta"] = _indexed_mean(own, f"{s}_ce", window) - ce_b
    return out


def closing_side(train_ce_delta: float, ce_delta: float) -> str:
    """From which side a split's gap moved against its baseline: ``"below"`` (train CE up),
    ``"above"`` (the split's CE down), ``"both"``, ``"none"`` (the gap did not shrink), or
    ``""`` when a delta is undefined. The gap reduction is ``train_ce_delta − ce_delta``."""
    if not (math.isfinite(train_ce_delta) and math.isfinite(ce_delta)):
        return ""
    below, above = max(train_ce_delta, 0.0), max(-ce_delta, 0.0)
    if train_ce_delta - ce_delta <= 0 or below + above == 0:
        return "none"
    share = below / (below + above)
    return "below" if share >= SIDE_SHARE else "above" if share <= 1 - SIDE_SHARE else "both"


def guard_problem(value: Any) -> str | None:
    """What a guard's bound may be (the spec, the ranking's reading of a folder's or bundle's
    spec): None when ``value`` is allowed."""
    ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                           and math.isfinite(float(value)) and value >= 0)
    return None if ok else ("null or a number >= 0 (accuracy as a fraction; cross-entropy "
                            "in nats)")


def guard_values(acc_delta: float, ce_delta: float, max_acc_drop: float | None,
                 max_ce_rise: float | None) -> dict[str, float]:
    """The guards of a configuration's mean Δ validation accuracy and CE against its matched
    baselines, as constraint values (Optuna's convention: <= 0 is satisfied, NaN is not): a
    gap closed by underfitting is no win. None turns a guard off. The one rule the search
    (``study.spec.Guards``) and the ranking (``analysis.Selection``) apply."""
    out = {}
    if max_acc_drop is not None:
        out["max_acc_drop"] = -acc_delta - max_acc_drop
    if max_ce_rise is not None:
        out["max_ce_rise"] = ce_delta - max_ce_rise
    return out


def within_guards(acc_delta: float, ce_delta: float, max_acc_drop: float | None,
                  max_ce_rise: float | None) -> bool:
    """Whether every guard of :func:`guard_values` is satisfied."""
    return all(v <= 0 for v in guard_values(acc_delta, ce_delta, max_acc_drop,
                                            max_ce_rise).values())

