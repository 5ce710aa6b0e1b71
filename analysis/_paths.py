"""``mistudy paths STUDY STUDY ...``: how stable a study's answer is across search paths.

One search path is one sample: the configurations one sampler seed happened to try. Given
several studies of one spec that differ in ``sampler_seed`` (folders or bundles), this says

* per **region** of the search space -- the family, the batch size, the third of the searched
  α range, and the third of the family's first searched parameter's range -- in how many paths
  a schedule of that region reached the feasible top k (selected on validation, as ``rank``
  selects), and
* for the **union** of the paths' top-k schedules, the confirmation on fresh seeds and split
  draws. ``mistudy confirm STUDY --top k`` on each path reruns its top k on the same fresh
  seeds and split draws (they follow from the spec, not from the path), so the union's
  confirmation is the paths' confirmations put together; a schedule confirmed by two paths has
  the same records in both (the runs are deterministic), which is checked, not assumed.

Compute (:func:`get_paths_info`, a NamedTuple of tables) is split from rendering
(:func:`format_paths`), as everywhere in ``analysis``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pandas as pd

from trainables.schedules import FAMILIES

from ._errors import AnalysisError
from ._text import fixed_width

__all__ = ["PathsInfo", "get_paths_info", "format_paths", "region_of"]

_BANDS = ("low", "mid", "high")


class PathsInfo(NamedTuple):
    studies: list[str]
    seeds: list[int | None]  # each path's sampler seed (from its spec)
    k: int
    metric: str  # the selection metric
    tops: list[list[str]]  # per path: its feasible top k, best first
    regions: pd.DataFrame  # region, paths (count), per-path best rank, schedules
    union: pd.DataFrame  # one row per schedule in any top k: region, paths, confirmed values
    disagreements: list[str]  # a schedule confirmed by two paths with different numbers


def _band(value: float, lo: float, hi: float, log: bool = False) -> str:
    if not (math.isfinite(value) and hi > lo):
        return ""
    if log and lo > 0:
        value, lo, hi = math.log(value), math.log(lo), math.log(hi)
    i = min(2, max(0, int(3 * (value - lo) / (hi - lo))))
    return _BANDS[i]


def region_of(config: dict[str, Any], search: dict[str, Any]) -> str:
    """A schedule's region: family, its first searched parameter's third, α's third of the
    searched range, batch size (``search``: the spec's ``search`` block)."""
    t = dict(config.get("transition") or {})
    family = str(t.get("family", "?"))
    parts = [family]
    fam = FAMILIES.get(family)
    ranges = ((search.get("families") or {}).get(family) or {}) if fam else {}
    declared = {p.name: p for p in fam.params} if fam else {}
    listed = [n for n in ranges if n in declared]  # the spec's own first, then the rest
    for p in (declared[n] for n in [*listed, *(n for n in declared if n not in listed)]):
        rng = ranges.get(p.name, [p.low, p.high])
        lo, hi = (rng if isinstance(rng, list) and len(rng) == 2 else (rng, rng))
        if p.name in t and float(hi) > float(lo):
            parts.append(f"{p.name} {_band(float(t[p.name]), float(lo), float(hi), p.log)}")
            break
    alpha = search.get("alpha")
    if isinstance(alpha, list) and len(alpha) == 2 and "alpha" in config:
        parts.append(f"α {_band(float(config['alpha']), float(alpha[0]), float(alpha[1]))}")
    parts.append(f"b{config.get('batch_size', '?')}")
    return " ".join(parts)


def get_paths_info(studies: list[str], k: int = 5) -> PathsInfo:
    from ._commands import analyze, confirmation
    from ._load import study_settings

    if len(studies) < 2:
        raise AnalysisError(f"paths: {len(studies)} study given -- allowed: two or more "
                            "studies of one spec (different sampler seeds)")
    analyses = [analyze(s, phase="search") for s in studies]
    settings = [study_settings(s) for s in studies]
    metric = analyses[0].selection.metric
    if any(a.selection.metric != metric for a in analyses):
        raise AnalysisError("paths: the studies select on different metrics -- allowed: "
                            "studies of one spec")
    search = settings[0].get("search") or {}
    tops: list[list[str]] = []
    configs: dict[str, dict[str, Any]] = {}
    for a in analyses:
        ok = a.ranking[a.ranking.feasible & a.ranking[metric].notna()]
        tops.append([str(s) for s in ok.schedule.head(k)])
        for r in a.trials[~a.trials.baseline].to_dict("records"):
            configs.setdefault(str(r["schedule"]), r["config"])
    regions: dict[str, dict[str, Any]] = {}
    for i, top in enumerate(tops):
        for rank, label in enumerate(top, start=1):
            reg = regions.setdefault(region_of(configs[label], search),
                                     {"ranks": [None] * len(studies), "schedules": []})
            if reg["ranks"][i] is None:
                reg["ranks"][i] = rank
            reg["schedules"].append(label)
    reg_rows = [{"region": name, "paths": sum(r is not None for r in v["ranks"]),
                 "ranks": v["ranks"], "schedules": sorted(set(v["schedules"]))}
                for name, v in regions.items()]
    reg_table = pd.DataFrame(reg_rows, columns=["region", "paths", "ranks", "schedules"])
    if not reg_table.empty:
        reg_table["_best"] = [min(r for r in rs if r is not None) for rs in reg_table.ranks]
        reg_table = reg_table.sort_values(["paths", "_best"], ascending=[False, True],
                                          kind="stable").drop(columns="_best")
    union, disagree = _union(studies, analyses, tops, configs, search, confirmation)
    seeds = [settings_seed(s) for s in settings]
    return PathsInfo(list(studies), seeds, k, metric, tops, reg_table.reset_index(drop=True),
                     union, disagree)


def settings_seed(settings: dict[str, Any]) -> int | None:
    seed = settings.get("sampler_seed")
    return int(seed) if isinstance(seed, int) else None


def _union(studies: list[str], analyses: list[Any], tops: list[list[str]],
           configs: dict[str, Any], search: dict[str, Any], confirmation: Any
           ) -> tuple[pd.DataFrame, list[str]]:
    m = analyses[0].selection.metric.removeprefix("val_")
    confirmed: dict[str, dict[str, Any]] = {}
    disagree = []
    for study, a in zip(studies, analyses, strict=True):
        info = confirmation(study, a)
        if info is None:
            continue
        for row in info.table.to_dict("records"):
            label = str(row["schedule"])
            seen = confirmed.get(label)
            if seen is not None and not _same(seen[f"confirmed_test_{m}"],
                                              row[f"confirmed_test_{m}"]):
                text = (f"{label}: {seen[f'confirmed_test_{m}']:+.4f} in one path, "
                        f"{row[f'confirmed_test_{m}']:+.4f} in another")
                if text not in disagree:
                    disagree.append(text)
            confirmed.setdefault(label, row)
    order: list[str] = []
    for top in tops:
        order += [s for s in top if s not in order]
    rows = []
    for label in order:
        c = confirmed.get(label, {})
        rows.append({
            "schedule": label, "region": region_of(configs[label], search),
            "paths": sum(label in t for t in tops),
            "best_rank": min(t.index(label) + 1 for t in tops if label in t),
            "confirmed": c.get(f"confirmed_test_{m}", math.nan),
            "ci_low": c.get(f"confirmed_{m}_ci_low", math.nan),
            "ci_high": c.get(f"confirmed_{m}_ci_high", math.nan),
            "delta_test_acc": c.get("confirmed_delta_test_acc", math.nan),
            "verdict": c.get("verdict", "not confirmed: run mistudy confirm on its path")})
    table = pd.DataFrame(rows, columns=["schedule", "region", "paths", "best_rank",
                                        "confirmed", "ci_low", "ci_high", "delta_test_acc",
                                        "verdict"])
    table = table.sort_values("confirmed", ascending=False, na_position="last",
                              kind="stable").reset_index(drop=True)
    return table, disagree


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9 * max(1.0, abs(a))


def format_paths(info: PathsInfo) -> str:
    n = len(info.studies)
    seeds = ", ".join("?" if s is None else str(s) for s in info.seeds)
    lines = [f"{n} search paths (sampler seeds {seeds}); feasible top {info.k} by "
             f"{info.metric} on validation", ""]
    head = ["region", "paths", *(f"#{i + 1}" for i in range(n)), "schedules"]
    rows = [[str(r["region"]), f"{r['paths']} of {n}",
             *("–" if x is None else str(x) for x in r["ranks"]), str(len(r["schedules"]))]
            for r in info.regions.to_dict("records")]
    lines += [f"regions reaching a path's feasible top {info.k} (#i: the best rank in path i):",
              fixed_width(head, rows, left=(0,)), ""]
    m = info.metric.removeprefix("val_")
    head = ["schedule", "paths", "confirmed", "95% CI", "Δacc", "verdict"]
    rows = [[str(r["schedule"]), f"{r['paths']} of {n}",
             "n/a" if not math.isfinite(r["confirmed"]) else f"{r['confirmed']:+.3f}",
             "n/a" if not math.isfinite(r["ci_low"]) else
             f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
             "n/a" if not math.isfinite(r["delta_test_acc"]) else
             f"{100 * r['delta_test_acc']:+.1f}", _short(str(r["verdict"]))]
            for r in info.union.to_dict("records")]
    lines += [f"the union of the top {info.k}s, confirmed on fresh seeds and split draws "
              f"(test_{m}, nats; Δacc in points):", fixed_width(head, rows, left=(0, 5)), ""]
    held = info.union[(info.union.paths == n) & (info.union.ci_low > 0)]
    lines.append(f"held in every path and confirmed (95% CI above 0): "
                 f"{', '.join(held.schedule) if not held.empty else 'none'}")
    for d in info.disagreements:
        lines.append(f"warning: confirmed differently by two paths: {d}")
    return "\n".join(lines)


def _short(verdict: str) -> str:
    for key, word in (("closes the gap", "closes"), ("inconclusive", "inconclusive"),
                      ("does not close", "does not close"), ("not confirmed", "not confirmed"),
                      ("no verdict", "no runs")):
        if verdict.startswith(key):
            return word + (", loses accuracy" if "but loses" in verdict else "")
    return verdict
