"""The range-edge warning: the winner of a search at the edge of its searched range.

A schedule that wins at a bound of its range says the optimum may lie outside it. Per searched
value of the top feasible schedule (enqueued schedules aside: they were given, not found):

* a numeric range ``[low, high]`` (α, a family's parameter): the value lies within
  :data:`EDGE_SHARE` of the range's width from a bound;
* ordered choices (batch sizes): the value is the first or the last choice.

Each warning names the spec key to widen, and how many of the top :data:`TOP` feasible
searched schedules sit in the same edge (:data:`NEAR_SHARE` of the width) -- one winner at a
bound can be chance; most of the top there is a direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import pandas as pd

__all__ = ["EDGE_SHARE", "NEAR_SHARE", "TOP", "EdgeInfo", "get_edge_info", "format_edges"]

EDGE_SHARE = 0.02  # "at the edge": within 2% of the range's width from a bound
NEAR_SHARE = 0.15  # "near the edge", for counting the top schedules on that side
TOP = 5


class EdgeInfo(NamedTuple):
    key: str  # the spec key to widen, e.g. "search.alpha"
    value: float  # the winner's value
    bound: str  # "low" | "high" (first | last choice for choices)
    low: float
    high: float
    near: int  # top feasible searched schedules near the same bound
    top: int  # how many top schedules were counted
    schedule: str  # the winner
    choices: tuple[float, ...] = ()  # the ordered choices (batch sizes), else empty


def _declared(family: str, param: str) -> tuple[float, float] | None:
    from trainables.schedules import FAMILIES

    for p in FAMILIES[family].params if family in FAMILIES else ():
        if p.name == param:
            return float(p.low), float(p.high)
    return None


def _ranges(search: Mapping[str, Any], family: str) -> dict[str, tuple[str, Any]]:
    """Searched value path -> (spec key, [low, high] or the ordered choices)."""
    out: dict[str, tuple[str, Any]] = {}
    alpha = search.get("alpha")
    if isinstance(alpha, list) and len(alpha) == 2 and alpha[0] != alpha[1]:
        out["alpha"] = ("search.alpha", (float(alpha[0]), float(alpha[1])))
    elif isinstance(alpha, dict) and isinstance(alpha.get("choices"), list) and \
            len(alpha["choices"]) > 1:  # ordered choices, like the batch sizes
        out["alpha"] = ("search.alpha", sorted(float(a) for a in alpha["choices"]))
    bs = search.get("batch_size")
    if isinstance(bs, list) and len(bs) > 1:
        out["batch_size"] = ("search.batch_size", sorted(int(b) for b in bs))
    fam = (search.get("families") or {}).get(family)
    if isinstance(fam, dict):
        from trainables.schedules import FAMILIES

        names = [p.name for p in FAMILIES[family].params] if family in FAMILIES else list(fam)
        for name in names:
            given = fam.get(name, None) if fam else None
            rng = (tuple(float(v) for v in given) if isinstance(given, list)
                   and len(given) == 2 else _declared(family, name) if name not in fam
                   else None)
            if rng is not None and rng[0] != rng[1]:
                out[f"transition.{name}"] = (f"search.families.{family}.{name}", rng)
    return out


def _side(value: float, rng: Any, share: float) -> str | None:
    if isinstance(rng, list):  # ordered choices
        return "low" if value == rng[0] else "high" if value == rng[-1] else None
    low, high = rng
    width = high - low
    if value <= low + share * width:
        return "low"
    if value >= high - share * width:
        return "high"
    return None


def _value(config: Mapping[str, Any], path: str) -> float | None:
    head, _, tail = path.partition(".")
    v = config.get(head)
    if tail:
        v = v.get(tail) if isinstance(v, Mapping) else None
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def get_edge_info(ranking: pd.DataFrame, trials: pd.DataFrame,
                  search: Mapping[str, Any] | None) -> list[EdgeInfo]:
    """The winner's searched values at an edge of their range (empty when none is, or when
    the study's search space is unknown: an MLflow experiment without its spec)."""
    if not search or ranking.empty:
        return []
    found = ranking[ranking.feasible & ~ranking.enqueued.astype(bool)]
    if found.empty:
        return []
    configs = dict(zip(trials.run_id, trials.config, strict=False)) \
        if "config" in trials else {}
    top = [configs.get(r[0]) for r in found.head(TOP).run_ids]
    win = top[0]
    if not isinstance(win, Mapping):
        return []
    family = str(win.get("transition", {}).get("family"))
    out = []
    for path, (key, rng) in _ranges(search, family).items():
        value = _value(win, path)
        side = None if value is None else _side(value, rng, EDGE_SHARE)
        if side is None or value is None:
            continue
        same = [c for c in top if isinstance(c, Mapping)
                and (path == "alpha" or path == "batch_size"
                     or c.get("transition", {}).get("family") == family)]
        near = sum(1 for c in same if (v := _value(c, path)) is not None
                   and _side(v, rng, NEAR_SHARE) == side)
        low, high = (rng[0], rng[-1])
        out.append(EdgeInfo(key, value, side, float(low), float(high), near, len(top),
                            str(found.iloc[0].schedule),
                            tuple(float(c) for c in rng) if isinstance(rng, list) else ()))
    return out


def _g(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:.4g}"


def format_edges(edges: list[EdgeInfo]) -> list[str]:
    """One warning per edge, one line each (a terminal wraps it; a wrapped continuation
    printed as its own ``warning:`` line read as a separate warning)."""
    lines = []
    for e in edges:
        among = ", ".join(_g(v) for v in (e.choices or (e.low, e.high)))
        if e.choices:
            where = f"the {'largest' if e.bound == 'high' else 'smallest'} of [{among}]"
            near = f"({e.near} of the top {e.top} chose it" + \
                (": the winner alone)" if e.near == 1 else ")")
        else:
            where = f"at the {'upper' if e.bound == 'high' else 'lower'} edge of [{among}]"
            near = f"({e.near} of the top {e.top} near it" + \
                (": the winner alone)" if e.near == 1 else ")")
        lines.append(f"{e.key}: the winner's {_g(e.value)} is {where} {near}; widen it")
    return lines
