"""``mistudy replay BUNDLE``: the closure-aware pruner run over a recorded study as if live.

Each searched configuration sees only its seeds' records up to the current epoch and their
matched baselines' records of the same epochs (``trainables.pruning.decide``: the mean over
seeds, as the study judges a configuration); the median rule compares it with the earlier
configurations that reached that epoch and were not pruned -- earlier by the live pruner's own
rule (``trainables.pruning.earlier_values``): configurations numbered 0..k-L for the study's
``sampler_lag`` L, in the order its first seed started for an asynchronous study. A pruned
configuration stops every seed (Optuna would be told PRUNED).

A study pruned live holds only the early epochs of its pruned configurations: they are left
out (never judged again, never counted as trained or saved) and the report says how many.
Reported: the searched epochs saved, which of the study's final feasible top K survive
(selected on validation exactly as ``mistudy rank`` selects), and how the score at the median
rule's epoch ranks against the final one (Spearman over configurations).
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import pandas as pd

from trainables.closure import match_key
from trainables.pruning import (
    DEFAULT_RULES,
    PruneRules,
    decide,
    earlier_values,
    mean_scores,
    objective_score,
)

__all__ = ["ReplayInfo", "get_replay_info", "format_replay"]


class ReplayInfo(NamedTuple):
    study: str
    rules: PruneRules
    trials: pd.DataFrame  # one row per searched trial: schedule, seed, epochs, pruned_at, rule
    epochs_total: int  # searched epochs the study trained
    epochs_saved: int  # epochs the pruned trials would not have trained
    epochs_prunable: int  # searched epochs of sampled (not enqueued) configurations
    top_k: list[str]  # the final feasible top K schedules
    top_k_kept: list[str]  # those no seed of which was pruned
    spearman: float  # score at the median epoch vs final validation value, over schedules
    pruned_schedules: list[str]
    live_pruned: list[str]  # configurations the study itself pruned: left out of the replay
    order: str  # how "earlier" was decided: "configuration number, lag L" or "start time"


def get_replay_info(study: str, rules: PruneRules = DEFAULT_RULES, k: int = 5) -> ReplayInfo:
    from ._commands import analyze
    from ._confirm import spearman
    from ._load import study_settings

    a = analyze(study, phase="search")
    lag = study_settings(study).get("sampler_lag")
    records = {rid: g.sort_values("epoch").to_dict("records")
               for rid, g in a.data.history.groupby("run_id")}
    base = {match_key(row["config"]): records.get(row["run_id"], [])
            for row in a.trials[a.trials.baseline].to_dict("records")}
    starts = dict(zip(a.data.runs.run_id, a.data.runs.start_time, strict=False))
    searched = a.trials[~a.trials.baseline].to_dict("records")
    # Optuna's numbers where the runs carry them; older records: the order the first seeds
    # started (the order the configurations were asked, up to Tune's start-up jitter)
    by_number = all(_number(r) is not None for r in searched)
    key = (lambda r: (_number(r), starts.get(r["run_id"]) or 0)) if by_number else \
        (lambda r: (starts.get(r["run_id"]) or 0, 0))
    configs: dict[str, list[dict[str, Any]]] = {}  # schedule -> its seeds' rows, in order
    for row in sorted(searched, key=key):
        configs.setdefault(str(row["schedule"]), []).append(row)
    live = sorted(label for label, seeds in configs.items() if _live_pruned(seeds))
    reached: dict[str, dict[str, float]] = {str(e): {} for e in rules.rungs}
    rows = []
    for i, (label, seeds) in enumerate(configs.items()):
        if label in live:
            continue  # its later epochs were never trained: nothing to replay
        number = _number(seeds[0]) if by_number else i
        pairs = [(records.get(r["run_id"], []), base.get(match_key(r["config"])))
                 for r in seeds]
        epochs = max(len(p[0]) for p in pairs)
        pruned_at: int | None = None
        rule: str | None = None
        at_median = math.nan
        # enqueued configurations are given, not sampled: never pruned (as in a live study)
        for e in range(1, 0 if _enqueued(seeds) else epochs + 1):
            earlier = {e: earlier_values(reached, e, number, lag)}
            rule = decide(rules, pairs, e, earlier)
            if rule is not None:
                pruned_at = e
                break
            if str(e) in reached:  # it reached this rung: later configurations compare with it
                v = objective_score(mean_scores(pairs, e, rules.window), "val_gap_reduction")
                if v is not None:
                    reached[str(e)][str(number)] = v
                    if e == rules.rungs[0]:
                        at_median = v
        for r, (recs, _) in zip(seeds, pairs, strict=True):
            rows.append({"schedule": label, "seed": r.get("p.seed"), "epochs": len(recs),
                         "pruned_at": pruned_at, "rule": rule, "enqueued": _enqueued(seeds),
                         "score_at_median": at_median})
    order = ("start time (asynchronous search)" if lag is None else
             f"configuration {'number' if by_number else 'start order'}, sampler_lag {lag}")
    t = pd.DataFrame(rows, columns=["schedule", "seed", "epochs", "pruned_at", "rule",
                                    "enqueued", "score_at_median"])
    cut = [r for r in rows if r["pruned_at"] is not None]
    saved = sum(int(str(r["epochs"])) - int(str(r["pruned_at"])) for r in cut)
    pruned = sorted({str(r["schedule"]) for r in cut})
    metric = a.selection.metric
    feasible = a.ranking[a.ranking.feasible & a.ranking[metric].notna()]
    top = list(feasible.schedule.head(k))
    final = a.ranking.set_index("schedule")[metric]
    early = t.groupby("schedule").score_at_median.first() if not t.empty else pd.Series()
    common = [s for s in early.index if s in final.index]
    rho = spearman([early[s] for s in common], [final[s] for s in common])
    total = int(t.epochs.sum()) if not t.empty else 0
    prunable = int(t[~t.enqueued].epochs.sum()) if not t.empty else 0
    return ReplayInfo(str(study), rules, t, total, saved, prunable, top,
                      [s for s in top if s not in pruned], rho, pruned, live, order)


def _number(row: dict[str, Any]) -> int | None:
    """The Optuna configuration number a searched run belongs to (None: not recorded)."""
    n = row.get("optuna_trial")
    try:
        return None if n is None or n != n else int(n)
    except (TypeError, ValueError):
        return None


def _live_pruned(seeds: list[dict[str, Any]]) -> bool:
    return any(not (v is None or v != v) and bool(v) for v in (r.get("pruned") for r in seeds))


def _enqueued(seeds: list[dict[str, Any]]) -> bool:
    return any(not (v is None or v != v) and bool(v) for v in (r.get("enqueued") for r in seeds))


def format_replay(info: ReplayInfo, fmt: str = "table") -> str:
    frac = info.epochs_saved / info.epochs_total if info.epochs_total else 0.0
    if fmt == "json":
        return json.dumps({
            "study": info.study, "rules": info.rules._asdict(), "rules_text":
            info.rules.describe(), "epochs_total": info.epochs_total,
            "epochs_saved": info.epochs_saved, "epochs_saved_fraction": frac,
            "epochs_prunable": info.epochs_prunable,
            "epochs_saved_of_prunable": info.epochs_saved / info.epochs_prunable
            if info.epochs_prunable else 0.0,
            "top_k": info.top_k, "top_k_kept": info.top_k_kept,
            "spearman_at_median_epoch": info.spearman if math.isfinite(info.spearman)
            else None,
            "live_pruned": info.live_pruned, "order": info.order,
            "pruned": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in r.items()} for r in _pruned_rows(info)]},
            indent=1, default=str)
    lines = [f"replay of {info.study}: {info.rules.describe()}; earlier = by {info.order}",
             f"searched epochs saved: {info.epochs_saved} of {info.epochs_total} "
             f"({100 * frac:.0f}%; {info.epochs_prunable} of sampled configurations, enqueued "
             f"ones exempt); configurations pruned: {len(info.pruned_schedules)}",
             f"final feasible top {len(info.top_k)} kept: {len(info.top_k_kept)} of "
             f"{len(info.top_k)}" + ("" if len(info.top_k_kept) == len(info.top_k) else
                                     " -- lost: " + ", ".join(s for s in info.top_k
                                                               if s not in info.top_k_kept)),
             f"Spearman (score at the median epoch vs final, over configurations): "
             f"{info.spearman:+.2f}" if math.isfinite(info.spearman) else "Spearman: n/a"]
    if info.live_pruned:
        lines.insert(2, f"left out: {len(info.live_pruned)} configurations the study pruned "
                        "live (their later epochs were never trained); counts are over the "
                        "others")
    for r in _pruned_rows(info):
        lines.append(f"  pruned at epoch {int(r['pruned_at']):>2} ({r['rule']}): "
                     f"{r['schedule']} s{r['seed']}")
    return "\n".join(lines)


def _pruned_rows(info: ReplayInfo) -> list[dict[str, Any]]:
    t = info.trials
    return [] if t.empty else t[t.pruned_at.notna()].to_dict("records")
