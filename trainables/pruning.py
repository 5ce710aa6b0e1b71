"""Closure-aware pruning: stop a configuration's trial early on its comparison with the matched
CE baseline *at the same epochs* (the baselines run first, so their records are there).

Torch-free and Ray-free: the one rule used by the live pruner (``study``'s ``scheduler:
closure``) and by ``mistudy replay`` (``analysis._replay``), which runs it over a committed
study's records as if live -- so a rule is proven on recorded studies before it touches one.

At epoch ``e`` (counted from 1: the epochs a trial has trained), over the window of its last
``window`` epochs and its baseline's records of the same epochs:

* **accuracy guard** (from ``grace``): mean Δ validation accuracy below ``-acc_drop``;
* **CE guard** (from ``grace``, when set): mean Δ validation CE above ``ce_rise``;
* **median rule** (at each epoch of ``rungs``): the validation gap reduction below the
  ``quantile`` of the *earlier* configurations that reached that epoch and were not pruned (at
  least ``median_min`` of them). Earlier is fixed by the study's order rule, never by timing:
  with ``sampler_lag`` L, configuration k compares with the sampled configurations numbered
  0..k-L -- the ones its own sampling saw, all finished before k was asked -- so a pruned study
  repeats whatever the finishing order (:func:`earlier_values`). The asynchronous search
  (``sampler_lag: async``) compares with those that reached the epoch before it in time.

A configuration is judged as the study judges it: on the **mean over its seeds** (each seed
against its own matched baseline), and pruned whole -- every seed stops -- as Optuna is told
once per configuration. A seed with no matched baseline does not count; with none, nothing is
pruned (there is nothing to compare with).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .closure import closure, mean_defined, window_mean

__all__ = ["PruneRules", "DEFAULT_RULES", "window_at", "scores_at", "mean_scores", "decide",
           "read_decisions", "pruned_configuration", "earlier_values", "objective_score",
           "DecisionsError", "SCORED_METRICS"]

Record = Mapping[str, Any]


class PruneRules(NamedTuple):
    """The defaults are the rule set, among 972 replayed on the two committed 30-epoch closure
    studies (docs/findings/replay_grid.py), that saves the most of both while keeping each
    study's final feasible top 5: 30.1% (Fashion-MNIST) and 35.9% (MNIST) of the searched
    epochs. Chosen on those two studies (in-sample, at the 30% line); replayed on a third
    study no rule was chosen on (MNIST, sampler seed 1) it saves 35.6% with that study's top 5
    intact. A median rule judging every epoch from 15 needs the seeds' mean (a seed's window is
    noisy); a study of another length should scale the rungs."""

    grace: int = 4  # no decision before this many epochs
    window: int = 3  # epochs averaged at a decision
    acc_drop: float | None = 0.015  # accuracy guard: Δ val acc < -acc_drop (a fraction)
    ce_rise: float | None = 0.1  # CE guard: Δ val CE > ce_rise (nats)
    rungs: tuple[int, ...] = tuple(range(15, 28))  # the median rule's epochs (empty: off)
    median_min: int = 4  # configurations that must have reached a rung before
    quantile: float = 0.5  # prune below this quantile of their values (0.5: the median)

    def describe(self) -> str:
        parts = [f"from epoch {self.grace}, last {self.window} epochs"]
        if self.acc_drop is not None:
            parts.append(f"Δ val acc < -{self.acc_drop:g}")
        if self.ce_rise is not None:
            parts.append(f"Δ val CE > {self.ce_rise:g}")
        if self.rungs:
            r = sorted(self.rungs)
            at = f"{r[0]}-{r[-1]}" if len(r) > 2 and r == list(range(r[0], r[-1] + 1)) \
                else ", ".join(map(str, r))
            parts.append(f"val gap reduction below the {self.quantile:g} quantile of earlier "
                         f"configurations at epochs {at} (once {self.median_min} reached "
                         f"them)")
        return "; ".join(parts)


DEFAULT_RULES = PruneRules()


def window_at(records: Sequence[Record], epochs: int, window: int) -> tuple[int, ...]:
    """The epoch numbers of the last ``window`` of the first ``epochs`` records."""
    done = sorted({int(r["epoch"]) for r in records})[:epochs]
    return tuple(done[-window:])


def scores_at(trial: Sequence[Record], baseline: Sequence[Record], epochs: int, window: int
              ) -> dict[str, float]:
    """Δ val acc, Δ val CE and the val gap reduction after ``epochs`` epochs, over the last
    ``window`` of them, against the baseline's same epochs (NaN where one is missing)."""
    w = window_at(trial, epochs, window)
    out = {}
    for key, name in (("val_acc", "acc_delta"), ("val_ce", "ce_delta")):
        out[name] = window_mean(trial, key, w) - window_mean(baseline, key, w)
    gap_b = window_mean(baseline, "val_gap", w)
    out["gap_reduction"] = gap_b - window_mean(trial, "val_gap", w)
    out["closure"] = closure(gap_b, window_mean(trial, "val_gap", w))
    for key in ("val_ce", "val_acc", "val_gap"):  # the trial's own, for absolute objectives
        out[key] = window_mean(trial, key, w)
    return out


# A study objective -> the score of the same name and direction at a pruning epoch: what
# Optuna is told as a pruned configuration's last intermediate value (TPE ranks pruned trials
# by it), and what ``pruning.json`` keeps.
SCORED_METRICS = {"val_gap_reduction": "gap_reduction", "val_closure": "closure",
                  "val_acc_delta": "acc_delta", "val_ce_delta": "ce_delta",
                  "val_ce": "val_ce", "val_acc": "val_acc", "val_gap": "val_gap"}


def objective_score(scores: Mapping[str, float] | None, metric: str | None) -> float | None:
    """The objective's value in ``scores`` (:func:`mean_scores`), None when it has none (no
    scores, a multi-objective study, or NaN)."""
    if scores is None or metric not in SCORED_METRICS:
        return None
    v = scores[SCORED_METRICS[metric]]
    return float(v) if math.isfinite(v) else None


def _quantile(values: Sequence[float], q: float) -> float:
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


Pair = tuple[Sequence[Record], Sequence[Record] | None]  # (a seed's records, its baseline's)


def mean_scores(pairs: Sequence[Pair], epochs: int, window: int) -> dict[str, float] | None:
    """:func:`scores_at` averaged over the seeds that have a baseline and ``epochs`` records;
    None when none has."""
    got = [scores_at(t, b, epochs, window) for t, b in pairs
           if b and len({int(r["epoch"]) for r in t}) >= epochs]
    if not got:
        return None
    # NaN-skipping for the closure ratio (undefined where a baseline has no gap), as
    # trainables.closure averages it over seeds
    return {k: mean_defined(g[k] for g in got) if k == "closure" else
            sum(g[k] for g in got) / len(got) for k in got[0]}


def decide(rules: PruneRules, pairs: Sequence[Pair], epochs: int,
           earlier: Mapping[int, Sequence[float]] | None = None) -> str | None:
    """The rule that prunes the configuration after ``epochs`` epochs, or None. ``pairs``:
    each seed's records with its matched baseline's; ``earlier``: rung epoch -> the val gap
    reductions of the configurations that reached it before this one."""
    if epochs < rules.grace:
        return None
    s = mean_scores(pairs, epochs, rules.window)
    if s is None:
        return None
    if rules.acc_drop is not None and s["acc_delta"] < -rules.acc_drop:
        return "accuracy guard"
    if rules.ce_rise is not None and s["ce_delta"] > rules.ce_rise:
        return "CE guard"
    before = (earlier or {}).get(epochs, ())
    if epochs in rules.rungs and len(before) >= rules.median_min and \
            math.isfinite(s["gap_reduction"]) and \
            s["gap_reduction"] < _quantile(before, rules.quantile):
        return f"median rule at epoch {epochs}"
    return None


def earlier_values(reached: Mapping[str, Any], epoch: int, number: int | None,
                   lag: int | None) -> list[float]:
    """The val gap reductions the median rule compares configuration ``number`` with at
    ``epoch``: ``reached`` is ``pruning.json``'s ``{rung: {configuration number: value}}``.
    With a lag L, the configurations numbered 0..number-L (fixed by the order rule); with
    ``lag`` None (the asynchronous search), all that reached it so far. A rung kept as a plain
    list (a folder from before the order rule) counts every value."""
    got = reached.get(str(epoch))
    if isinstance(got, list):
        return [float(v) for v in got]
    if not isinstance(got, dict):
        return []
    return [float(v) for n, v in sorted(got.items(), key=lambda kv: int(kv[0]))
            if lag is None or number is None or int(n) <= number - lag]


class DecisionsError(ValueError):
    """``pruning.json`` exists but is not the pruner's decisions (the message is one line)."""


_EMPTY: dict[str, dict[str, Any]] = {"pruned": {}, "reached": {}, "passed": {}}
MAX_DECISIONS_BYTES = 16 * 2**20  # 100,000 configurations' decisions fit in far less


def read_decisions(path: Path, missing_ok: bool = True) -> dict[str, Any]:
    """The decisions file the live pruner keeps (a study folder's ``pruning.json``):
    ``{"pruned": {number: [epoch, rule, value]}, "reached": {rung: {number: value}},
    "passed": {number: [rungs]}}``. A missing file is no decisions yet (``missing_ok``);
    a link, FIFO or folder raises ``fileio.UnreadableFile``; anything else that is not such a
    file -- not JSON, wrong shapes -- raises :class:`DecisionsError` naming it: a lost
    decisions file is never read as "nothing was pruned"."""
    from .fileio import UnreadableFile, read_regular_bytes

    path = Path(path)
    try:
        blob = read_regular_bytes(path, MAX_DECISIONS_BYTES)
    except FileNotFoundError:
        if missing_ok:
            return {k: {} for k in _EMPTY}
        raise DecisionsError(f"{path}: missing -- the closure pruner's decisions") from None
    except UnreadableFile:
        raise  # a link, FIFO or folder: refused as it is, never rebuilt over
    except OSError as exc:
        raise DecisionsError(f"{path}: {exc.strerror or exc}") from None
    try:
        state = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DecisionsError(f"{path}: not JSON (truncated?) -- the closure pruner's "
                             "decisions") from None
    problem = _decisions_problem(state)
    if problem:
        raise DecisionsError(f"{path}: {problem}")
    return state


def _decisions_problem(state: Any) -> str | None:
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in _EMPTY):
        return "not the pruner's decisions (a mapping of 'pruned', 'reached', 'passed')"
    for n, hit in state["pruned"].items():
        if not (str(n).isdigit() and isinstance(hit, list) and len(hit) == 3
                and _int(hit[0]) and isinstance(hit[1], str)
                and (hit[2] is None or _num(hit[2]))):
            return f"pruned[{n!r}]: {hit!r} -- [epoch, rule, value]"
    for e, got in state["reached"].items():
        vals = got.values() if isinstance(got, dict) else got
        if not (str(e).isdigit() and isinstance(got, (dict, list))
                and all(_num(v) for v in vals)
                and (not isinstance(got, dict) or all(str(n).isdigit() for n in got))):
            return f"reached[{e!r}]: not {{configuration: value}}"
    for n, rungs in state["passed"].items():
        if not (str(n).isdigit() and isinstance(rungs, list) and all(_int(r) for r in rungs)):
            return f"passed[{n!r}]: not a list of epochs"
    return None


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def pruned_configuration(path: Path, number: int) -> tuple[int, str, float | None] | None:
    """(epoch, rule, the val gap reduction then) when ``scheduler: closure`` pruned Optuna's
    configuration ``number`` (:func:`read_decisions`); None otherwise."""
    hit = read_decisions(path)["pruned"].get(str(number))
    return (int(hit[0]), str(hit[1]), hit[2]) if isinstance(hit, list) and len(hit) == 3 \
        else None
