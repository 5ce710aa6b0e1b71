"""``mistudy replay BUNDLE``: the closure-aware pruner run over a recorded study as if live.

Each searched configuration, in the order its first seed started, sees only its seeds' records
up to the current epoch and their matched baselines' records of the same epochs
(``trainables.pruning.decide``: the mean over seeds, as the study judges a configuration); the
median rule compares it with the configurations that reached that epoch before it and were not
pruned. A pruned configuration stops every seed (Optuna would be told PRUNED).
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
from trainables.pruning import DEFAULT_RULES, PruneRules, decide, mean_scores

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


def get_replay_info(study: str, rules: PruneRules = DEFAULT_RULES, k: int = 5) -> ReplayInfo:
    from ._commands import analyze
    from ._confirm import spearman

    a = analyze(study, phase="search")
    records = {rid: g.sort_values("epoch").to_dict("records")
               for rid, g in a.data.history.groupby("run_id")}
    base = {match_key(row["config"]): records.get(row["run_id"], [])
            for row in a.trials[a.trials.baseline].to_dict("records")}
    starts = dict(zip(a.data.runs.run_id, a.data.runs.start_time, strict=False))
    configs: dict[str, list[dict[str, Any]]] = {}  # schedule -> its seeds' rows, by start
    for row in sorted(a.trials[~a.trials.baseline].to_dict("records"),
                      key=lambda r: starts.get(r["run_id"]) or 0):
        configs.setdefault(str(row["schedule"]), []).append(row)
    reached: dict[int, list[float]] = {e: [] for e in rules.rungs}  # rung -> earlier values
    rows = []
    for label, seeds in configs.items():
        pairs = [(records.get(r["run_id"], []), base.get(match_key(r["config"])))
                 for r in seeds]
        epochs = max(len(p[0]) for p in pairs)
        pruned_at: int | None = None
        rule: str | None = None
        at_median = math.nan
        # enqueued configurations are given, not sampled: never pruned (as in a live study)
        for e in range(1, 0 if _enqueued(seeds) else epochs + 1):
            rule = decide(rules, pairs, e, reached)
            if rule is not None:
                pruned_at = e
                break
            if e in reached:  # it reached this rung: later configurations compare with it
                s = mean_scores(pairs, e, rules.window)
                if s is not None and math.isfinite(s["gap_reduction"]):
                    reached[e].append(s["gap_reduction"])
                    if e == rules.rungs[0]:
                        at_median = s["gap_reduction"]
        for r, (recs, _) in zip(seeds, pairs, strict=True):
            rows.append({"schedule": label, "seed": r.get("p.seed"), "epochs": len(recs),
                         "pruned_at": pruned_at, "rule": rule, "enqueued": _enqueued(seeds),
                         "score_at_median": at_median})
    t = pd.DataFrame(rows)
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
                      [s for s in top if s not in pruned], rho, pruned)


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
            "spearman_at_median_epoch": info.spearman,
            "pruned": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in r.items()} for r in _pruned_rows(info)]},
            indent=1, default=str)
    lines = [f"replay of {info.study}: {info.rules.describe()}",
             f"searched epochs saved: {info.epochs_saved} of {info.epochs_total} "
             f"({100 * frac:.0f}%; {info.epochs_prunable} of sampled configurations, enqueued "
             f"ones exempt); configurations pruned: {len(info.pruned_schedules)}",
             f"final feasible top {len(info.top_k)} kept: {len(info.top_k_kept)} of "
             f"{len(info.top_k)}" + ("" if len(info.top_k_kept) == len(info.top_k) else
                                     " -- lost: " + ", ".join(s for s in info.top_k
                                                               if s not in info.top_k_kept)),
             f"Spearman (score at the median epoch vs final, over configurations): "
             f"{info.spearman:+.2f}" if math.isfinite(info.spearman) else "Spearman: n/a"]
    for r in _pruned_rows(info):
        lines.append(f"  pruned at epoch {int(r['pruned_at']):>2} ({r['rule']}): "
                     f"{r['schedule']} s{r['seed']}")
    return "\n".join(lines)


def _pruned_rows(info: ReplayInfo) -> list[dict[str, Any]]:
    t = info.trials
    return [] if t.empty else t[t.pruned_at.notna()].to_dict("records")
