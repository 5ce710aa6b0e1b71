"""Study specs: fixed settings, the search space, objective, scheduler, resources, seeds.

A spec is YAML; it is validated completely before Ray starts, and every problem is reported
as one line ``path: bad value -- what is allowed``. Example (the ``quick`` preset)::

    name: quick
    fixed: {dataset: fashion_mnist, model: shallow, epochs: 6, lr: 0.001}
    search:
      families: {power: {exponent: [0.1, 1.5]}, exponential: {}, cosine: {}}
      alpha: [1.0, 2.0]        # a range, one number to fix it, or {choices: [2, 3]}
      batch_size: [128, 256]   # choices
    trials: 4                  # configurations sampled by Optuna
    seeds: [0]                 # every configuration runs with each seed
    objective: {metric: val_ce, mode: min, last_k: 2}
    sampler_seed: 0            # the search path
    sampler_lag: 2             # configuration k sampled from 0..k-2 only: repeatable ("async")

Families listed with ``{}`` search their declared ranges (``trainables.schedules``); a
parameter given a ``[low, high]`` pair searches that sub-range; a single number fixes it.
Matched cross-entropy baselines (``constant``, ``c = 1``) run for every batch size × seed.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from trainables.closure import guard_problem, guard_values, last_k_problem
from trainables.config import MAX_SEED, ConfigError, TrainConfig
from trainables.records import DEFAULT_ALPHA, DEFAULT_LAST_K, NUM_CLASSES
from trainables.schedules import FAMILIES
from trainables.studyfolder import NAME_RULE, is_study_name
from trainables.yamlio import MAX_BYTES, YamlLimitError, safe_load

__all__ = ["StudySpec", "SpecError", "load_spec", "parse_spec", "PRESETS", "OBJECTIVE_METRICS",
           "RELATIVE_METRICS", "Objective", "Guards"]

PRESETS = ("quick", "paper-mnist", "paper-fashion", "closure-fashion", "closure-mnist")
MAX_TRIALS = 100_000  # sampled configurations; more is a typo, not a study
# Validation metrics only: the test split never steers the search. The relative ones are
# measured against the matched cross-entropy baselines (trainables.closure, one rule).
OBJECTIVE_METRICS = {"val_ce": "min", "val_acc": "max", "val_gap": "min",
                     "val_closure": "max", "val_gap_reduction": "max",
                     "val_acc_delta": "max", "val_ce_delta": "min"}
RELATIVE_METRICS = frozenset({"val_closure", "val_gap_reduction", "val_acc_delta",
                              "val_ce_delta"})
# The per-epoch record a relative metric derives from: what Tune's scheduler and checks see.
RECORD_METRIC = {"val_closure": ("val_gap", "min"), "val_gap_reduction": ("val_gap", "min"),
                 "val_acc_delta": ("val_acc", "max"), "val_ce_delta": ("val_ce", "min")}
GUARD_KEYS = ("max_acc_drop", "max_ce_rise")
SEARCHED_KEYS = ("transition", "alpha", "batch_size", "seed")


class SpecError(ValueError):
    """One or more problems in a study spec; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # min | max

    @property
    def relative(self) -> bool:
        """Measured against the matched baselines (told once they have finished)."""
        return self.metric in RELATIVE_METRICS

    @property
    def record_metric(self) -> tuple[str, str]:
        """(metric, mode) of the per-epoch record behind it, for Tune's checks and ASHA."""
        return RECORD_METRIC.get(self.metric, (self.metric, self.mode))


@dataclass(frozen=True)
class Guards:
    """A configuration is infeasible when its mean ``val_acc_delta < -max_acc_drop`` or its
    mean ``val_ce_delta > max_ce_rise`` (None: that guard is off). Passed to Optuna as
    ``constraints_func``: a gap closed by underfitting is no win."""

    max_acc_drop: float | None = None  # accuracy (fraction), e.g. 0.01 = one point
    max_ce_rise: float | None = None  # nats

    @property
    def active(self) -> bool:
        return self.max_acc_drop is not None or self.max_ce_rise is not None

    def constraints(self, acc_delta: float, ce_delta: float) -> dict[str, float]:
        """Optuna's convention: a value <= 0 is satisfied (``trainables.closure``)."""
        return guard_values(acc_delta, ce_delta, self.max_acc_drop, self.max_ce_rise)


@dataclass(frozen=True)
class StudySpec:
    name: str
    fixed: dict[str, Any]  # TrainConfig keys shared by all trials
    families: dict[str, dict[str, Any]]  # family -> param -> (low, high) tuple or fixed value
    alpha: tuple[float, float]  # low == high fixes it (choices: their smallest and largest)
    batch_sizes: tuple[int, ...]
    trials: int
    seeds: tuple[int, ...]
    objectives: tuple[Objective, ...]
    last_k: int = DEFAULT_LAST_K  # objective = mean of the last k epochs
    guards: Guards = field(default_factory=Guards)
    # alpha searched over these values instead of the range (``{choices: [2, 3]}``: integer
    # orders take the estimator's trace path, no eigensolve); empty: the range
    alpha_choices: tuple[float, ...] = ()
    # configurations evaluated first (Optuna's enqueue_trial), as Optuna params
    enqueue: tuple[dict[str, Any], ...] = ()
    scheduler: str = "none"  # none | asha | closure (trainables.pruning; rules in `pruner`)
    pruner: dict[str, Any] = field(default_factory=dict)  # PruneRules overrides
    asha: dict[str, Any] = field(default_factory=dict)
    stopper: dict[str, Any] = field(default_factory=dict)  # saturation stopper; empty = off
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 1
    sampler_seed: int = 0
    # The search's order rule (study._searcher): a sampled configuration k is asked from the
    # told results of configurations 0..k-lag only, and waits while one of them runs, so its
    # path depends on the spec alone (not on finishing order, CPUs, nodes or resumes).
    # None: the asynchronous search (asks at once from whatever has finished; not repeatable).
    sampler_lag: int | None = 2
    raw: dict[str, Any] = field(default_factory=dict)  # the spec as written

    @property
    def relative(self) -> bool:
        """Whether Optuna's value needs the matched baselines (a relative metric or a guard)."""
        return any(o.relative for o in self.objectives) or self.guards.active

    @property
    def num_baselines(self) -> int:
        return len(self.batch_sizes) * len(self.seeds)

    @property
    def num_trials(self) -> int:
        """Searched trials (configs × seeds) plus baselines."""
        return self.trials * len(self.seeds) + self.num_baselines


_TOP_KEYS = {"name", "fixed", "search", "trials", "seeds", "objective", "scheduler", "asha",
             "stopper", "resources", "max_failures", "sampler_seed", "sampler_lag", "enqueue",
             "pruner"}
_SEARCH_KEYS = {"families", "alpha", "batch_size"}
_RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial", "max_concurrent"}
_STOPPER_KEYS = {"window", "rel_tol", "grad_tol", "min_epochs"}
_ASHA_KEYS = {"grace_period", "reduction_factor"}
_PRUNER_RULES = {  # PruneRules field -> (ok, allowed)
    "grace": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "window": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "acc_drop": (lambda v: v is None or (_num(v) and 0 <= v <= 1),
                 "a fraction in [0, 1] (0.015: 1.5 accuracy points) or null (off)"),
    "ce_rise": (lambda v: v is None or _num(v),
                "a finite number (nats; negative demands a CE gain) or null (off)"),
    "rungs": (lambda v: isinstance(v, list) and all(_int(e) and e >= 1 for e in v),
              "a list of epochs >= 1"),
    "median_min": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "quantile": (lambda v: _num(v) and 0 < v < 1, "a number in (0, 1)"),
}


def pruner_problems(rules: Any, prefix: str = "pruner.") -> list[str]:
    """One line per bad closure-pruner rule (the spec's ``pruner:`` and ``mistudy replay``'s
    flags share it); ``rules`` a mapping of ``PruneRules`` fields."""
    if not isinstance(rules, dict):
        return []
    out = []
    for k, v in rules.items():
        if k in _PRUNER_RULES and not _PRUNER_RULES[k][0](v):
            name = f"{prefix}{k.replace('_', '-')}" if prefix == "--" else f"{prefix}{k}"
            out.append(f"{name}: {_REPR.repr(v)} -- {_PRUNER_RULES[k][1]}")
    return out


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 4, 4, 2


def _short_repr(value: Any) -> str:
    """At most ~80 characters, built without the whole repr (a huge value costs nothing)."""
    return _REPR.repr(value)[:80]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{path}: {_short_repr(value)} -- {allowed}")

    def keys(self, path: str, data: Any, known: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.bad(path or "spec", data, f"must be a mapping with keys {sorted(known)}")
            return {}
        for k in data:
            if k not in known:
                self.bad(f"{path}.{k}" if path else str(k), data[k],
                         f"unknown key; known: {sorted(known)}")
        return data


def _family_ranges(c: _Checker, fams: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(fams, dict) or not fams:
        c.bad("search.families", fams, f"a non-empty mapping of families: {sorted(FAMILIES)}")
        return out
    for name, params in fams.items():
        path = f"search.families.{name}"
        if name not in FAMILIES:
            c.bad(path, name, f"unknown family; allowed: {sorted(FAMILIES)}")
            continue
        declared = {p.name: p for p in FAMILIES[name].params}
        params = c.keys(path, params if params is not None else {}, set(declared))
        ranges: dict[str, Any] = {}
        for pname, p in declared.items():
            v = params.get(pname, [p.low, p.high])
            lo, hi = (v, v) if _num(v) else (tuple(v) if isinstance(v, list) and len(v) == 2
                                              else (None, None))
            if not (_num(lo) and _num(hi) and p.low <= lo <= hi <= p.high):
                c.bad(f"{path}.{pname}", v,
                      f"a number or [low, high] inside the declared [{p.low:g}, {p.high:g}]")
                continue
            if p.integer and not (float(lo).is_integer() and float(hi).is_integer()):
                c.bad(f"{path}.{pname}", v, "integers (this parameter counts epochs)")
                continue
            ranges[pname] = (lo, hi)
        out[name] = ranges
    return out


def _guards(c: _Checker, items: list[Any]) -> Guards:
    """``max_acc_drop`` / ``max_ce_rise`` in any objective item (one value each)."""
    found: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        for k in GUARD_KEYS:
            if k not in item:
                continue
            v = item[k]
            path = "objective" if len(items) == 1 else f"objective[{i}]"
            problem = guard_problem(v)
            if problem:
                c.bad(f"{path}.{k}", v, problem)
            elif k in found and found[k] != v:
                c.bad(f"{path}.{k}", v, f"one value for the study (also given: {found[k]})")
            else:
                found[k] = None if v is None else float(v)
    return Guards(**found)


def _objectives(c: _Checker, raw: Any) -> tuple[tuple[Objective, ...], int]:
    items = raw if isinstance(raw, list) else [raw if raw is not None else {}]
    if not 1 <= len(items) <= 2:
        c.bad("objective", raw, "one objective, or a list of two (multi-objective)")
        return (), DEFAULT_LAST_K
    objs, last_ks = [], []
    for i, item in enumerate(items):
        path = "objective" if len(items) == 1 else f"objective[{i}]"
        item = c.keys(path, item, {"metric", "mode", "last_k", *GUARD_KEYS})
        metric = item.get("metric", "val_ce")
        if metric not in OBJECTIVE_METRICS:
            c.bad(f"{path}.metric", metric,
                  f"validation metrics only (the test split never steers): "
                  f"{sorted(OBJECTIVE_METRICS)}")
            continue
        mode = item.get("mode", OBJECTIVE_METRICS[metric])
        if mode not in ("min", "max"):
            c.bad(f"{path}.mode", mode, "'min' or 'max'")
            continue
        last_k = item.get("last_k", DEFAULT_LAST_K)
        if allowed := last_k_problem(last_k):
            c.bad(f"{path}.last_k", last_k, allowed)
            last_k = DEFAULT_LAST_K
        last_ks.append(last_k)
        objs.append(Objective(metric, mode))
    if len(set(last_ks)) > 1:
        c.bad("objective", raw, f"one last_k for all objectives (got {last_ks}): a trial's "
                                f"final value is one window of epochs")
    return tuple(objs), last_ks[0] if last_ks else DEFAULT_LAST_K


def _enqueue_one(c: _Checker, path: str, item: Any, families: dict[str, dict[str, Any]],
                 alpha: tuple[float, float], batch_sizes: tuple[int, ...],
                 choices: tuple[float, ...] = ()) -> dict[str, Any]:
    """One enqueued configuration as Optuna params (only the searched ones)."""
    item = c.keys(path, item, {"transition", "alpha", "batch_size"})
    tr = item.get("transition")
    fam = tr.get("family") if isinstance(tr, dict) else None
    if fam not in families:
        c.bad(f"{path}.transition", tr, f"a mapping with family in the searched families "
                                       f"{sorted(families)}")
        return {}
    params: dict[str, Any] = {"family": fam}  # always suggested (sample_config)
    for pname, v in tr.items():
        if pname == "family":
            continue
        rng = families[fam].get(pname)
        if rng is None:
            c.bad(f"{path}.transition.{pname}", v, f"not a parameter of {fam}; known: "
                                                   f"{sorted(families[fam])}")
        elif not (_num(v) and rng[0] <= v <= rng[1]):
            c.bad(f"{path}.transition.{pname}", v, f"inside the searched [{rng[0]}, {rng[1]}]")
        elif rng[0] != rng[1]:
            params[f"{fam}.{pname}"] = v
    if "alpha" in item:
        a = item["alpha"]
        if choices and not (_num(a) and float(a) in choices):
            c.bad(f"{path}.alpha", a, f"one of the searched choices {list(choices)}")
        elif not (_num(a) and alpha[0] <= a <= alpha[1]):
            c.bad(f"{path}.alpha", a, f"inside the searched [{alpha[0]}, {alpha[1]}]")
        elif alpha[0] != alpha[1]:
            params["alpha"] = float(a)
    if "batch_size" in item:
        b = item["batch_size"]
        if b not in batch_sizes or not _int(b):
            c.bad(f"{path}.batch_size", b, f"one of the searched {list(batch_sizes)}")
        elif len(batch_sizes) > 1:
            params["batch_size"] = b
    return params


def _enqueue(c: _Checker, raw: Any, families: dict[str, dict[str, Any]],
             alpha: tuple[float, float], batch_sizes: tuple[int, ...],
             choices: tuple[float, ...] = ()) -> tuple[dict[str, Any], ...]:
    """``enqueue:``: configurations evaluated first, each inside the search space."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > 1000:
        c.bad("enqueue", raw, "a list (at most 1000) of {transition: {family: ..., ...}, "
                              "alpha: ..., batch_size: ...}")
        return ()
    return tuple(_enqueue_one(c, f"enqueue[{i}]", item, families, alpha, batch_sizes,
                              choices) for i, item in enumerate(raw))


def _gave_last_k(raw: Any) -> bool:
    """The spec set a well-formed last_k (a malformed one is reported once, by its own rule,
    not again as the default it fell back to)."""
    items = raw if isinstance(raw, list) else [raw]
    return any(isinstance(i, dict) and "last_k" in i and last_k_problem(i["last_k"]) is None
               for i in items)


def _alpha_choices(c: _Checker, a: Any) -> tuple[float, ...]:
    """``{choices: [2, 3]}``: distinct numbers in (0, 10], sorted; () when ``a`` is no such
    mapping (a problem is reported when it is a mapping of another shape)."""
    if not isinstance(a, dict):
        return ()
    vals = a.get("choices")
    if set(a) != {"choices"} or not (isinstance(vals, list) and vals and all(
            _num(v) and 0 < v <= 10 for v in vals) and len(set(vals)) == len(vals)):
        c.bad("search.alpha", a, "{choices: [numbers in (0, 10], distinct]}, e.g. "
                                 "{choices: [2, 3]} (integer orders need no eigensolve)")
        return (DEFAULT_ALPHA,)
    return tuple(sorted(float(v) for v in vals))


def _search(c: _Checker, raw: dict[str, Any]
            ) -> tuple[Any, tuple[float, float], tuple[int, ...], tuple[float, ...]]:
    search = c.keys("search", raw.get("search"), _SEARCH_KEYS)
    families = _family_ranges(c, search.get("families"))
    a = search.get("alpha", DEFAULT_ALPHA)
    choices = _alpha_choices(c, a)
    alpha: tuple[Any, ...] | None = (choices[0], choices[-1]) if choices else (a, a) if \
        _num(a) else (tuple(a) if isinstance(a, list) and len(a) == 2 else None)
    if alpha is None or not choices and not (all(_num(v) for v in alpha)
                                             and 0 < alpha[0] <= alpha[1] <= 10):
        c.bad("search.alpha", a, "a number, [low, high] with 0 < low <= high <= 10 "
                                 "(1 is the Shannon limit; the paper uses 1.01), or "
                                 "{choices: [2, 3]}")
        alpha = (DEFAULT_ALPHA, DEFAULT_ALPHA)
    bs = search.get("batch_size", [256])
    bs = [bs] if _int(bs) else bs
    if not (isinstance(bs, list) and bs and all(_int(b) and b >= NUM_CLASSES for b in bs)):
        c.bad("search.batch_size", bs, f"a list of integers >= {NUM_CLASSES} (the class count)")
        bs = [256]
    return families, (float(alpha[0]), float(alpha[1])), tuple(bs), choices


# The one rule for each value a spec and a command-line flag can both set: (ok, allowed).
VALUE_RULES: dict[str, tuple[Any, str]] = {
    "cpus_per_trial": (lambda v: _num(v) and v > 0, "a number > 0"),
    "gpus_per_trial": (lambda v: _num(v) and v >= 0, "a number >= 0 (fractions share a GPU)"),
    "trials": (lambda v: _int(v) and 1 <= v <= MAX_TRIALS, f"an integer in [1, {MAX_TRIALS}]"),
}


def value_problem(key: str, value: Any) -> str | None:
    """What is allowed for ``key`` when ``value`` breaks :data:`VALUE_RULES`, else None."""
    ok, allowed = VALUE_RULES[key]
    return None if ok(value) else allowed


def _resources(c: _Checker, raw: dict[str, Any]) -> tuple[float, float, int | None]:
    res = c.keys("resources", raw.get("resources") or {}, _RESOURCE_KEYS)
    cpus, gpus = res.get("cpus_per_trial", 1), res.get("gpus_per_trial", 0)
    mc = res.get("max_concurrent")
    if value_problem("cpus_per_trial", cpus):
        c.bad("resources.cpus_per_trial", cpus, VALUE_RULES["cpus_per_trial"][1])
        cpus = 1
    if value_problem("gpus_per_trial", gpus):
        c.bad("resources.gpus_per_trial", gpus, VALUE_RULES["gpus_per_trial"][1])
        gpus = 0
    if mc is not None and not (_int(mc) and mc >= 1):
        c.bad("resources.max_concurrent", mc, "null or an integer >= 1")
        mc = None
    return float(cpus), float(gpus), mc


def _check_fixed(c: _Checker, fixed: dict[str, Any], batch_sizes: tuple[int, ...],
                 alphas: tuple[float, ...]) -> None:
    """The fixed settings as trials will get them: with each searched batch-size extreme and
    each α the search can give (its choices, or the ends of its range): ``estimator: trace``
    with α choices [2, 3] is checked with 2 and 3, not with the default α."""
    for k in SEARCHED_KEYS:
        if k in fixed:
            c.bad(f"fixed.{k}", fixed[k], "searched or set per trial; set it under search/seeds")
    probe = {k: v for k, v in fixed.items() if k not in SEARCHED_KEYS}
    try:
        cfg = TrainConfig.from_dict({**probe, "batch_size": min(batch_sizes),
                                     "alpha": alphas[0]})
        for a in alphas:
            TrainConfig.from_dict({**probe, "batch_size": max(batch_sizes), "alpha": a})
    except ConfigError as exc:
        c.problems.extend(f"fixed: {p}" for p in exc.problems)
        return
    if cfg.device.startswith("cuda"):
        c.bad("fixed.device", cfg.device, "use auto in studies: trials without a GPU use the CPU")


def _check_misc(c: _Checker, raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, default, ok, allowed in (
        ("trials", 4, VALUE_RULES["trials"][0], VALUE_RULES["trials"][1]),
        ("max_failures", 1, lambda v: _int(v) and v >= 0, "an integer >= 0"),
        ("sampler_seed", 0, lambda v: _int(v) and v >= 0, "an integer >= 0"),
        ("sampler_lag", 2, lambda v: v == "async" or (_int(v) and 1 <= v <= MAX_TRIALS),
         "an integer >= 1 (configuration k is sampled from 0..k-lag), or 'async'"),
        ("scheduler", "none", lambda v: v in ("none", "asha", "closure"),
         "'none', 'asha' or 'closure'"),
        ("name", "study", is_study_name, f"{NAME_RULE} inside --out"),
    ):
        v = raw.get(key, default)
        if not ok(v):
            c.bad(key, v, allowed)
            v = default
        out[key] = v
    seeds = raw.get("seeds", [0])
    seeds = [seeds] if _int(seeds) else seeds
    if not (isinstance(seeds, list) and seeds and all(_int(s) and 0 <= s < MAX_SEED
                                                        for s in seeds)
            and len(set(seeds)) == len(seeds)):
        c.bad("seeds", seeds, f"a list of distinct integers in [0, {MAX_SEED})")
        seeds = [0]
    out["seeds"] = tuple(seeds)
    return out


def _check_stopper_asha(c: _Checker, raw: dict[str, Any]) -> tuple[dict, dict]:
    stop = c.keys("stopper", raw.get("stopper") or {}, _STOPPER_KEYS | {"enabled"})
    if stop and stop.pop("enabled", True):
        for k, ok in (("window", lambda v: _int(v) and v >= 1),
                      ("rel_tol", lambda v: _num(v) and v > 0),
                      ("min_epochs", lambda v: _int(v) and v >= 1),
                      ("grad_tol", lambda v: v is None or (_num(v) and v > 0))):
            if k in stop and not ok(stop[k]):
                c.bad(f"stopper.{k}", stop[k], "a positive number (window/min_epochs: integer)")
    else:
        stop = {}
    pruner = raw.get("pruner") or {}
    if pruner and raw.get("scheduler", "none") != "closure":
        c.bad("pruner", "{...}", "only with scheduler: closure (it configures that pruner)")
    c.problems.extend(pruner_problems(c.keys("pruner", pruner, set(_PRUNER_RULES))))
    asha = c.keys("asha", raw.get("asha") or {}, _ASHA_KEYS)
    for k, v in asha.items():
        if not (_int(v) and v >= (2 if k == "reduction_factor" else 1)):
            c.bad(f"asha.{k}", v, "an integer >= 1 (reduction_factor >= 2)")
    return stop, asha


def parse_spec(raw: Any) -> StudySpec:
    """Validate a spec mapping completely; raise :class:`SpecError` listing every problem."""
    c = _Checker()
    raw = c.keys("", raw, _TOP_KEYS)
    if not isinstance(raw, dict) or not raw:
        raise SpecError(c.problems or ["spec: empty -- a mapping with 'search' at least"])
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        c.bad("fixed", fixed, "a mapping of training config keys")
        fixed = {}
    families, alpha, batch_sizes, alpha_choices = _search(c, raw)
    objectives, last_k = _objectives(c, raw.get("objective"))
    obj_raw = raw.get("objective")
    guards = _guards(c, obj_raw if isinstance(obj_raw, list) else [obj_raw])
    enqueue = _enqueue(c, raw.get("enqueue"), families, alpha, batch_sizes, alpha_choices)
    cpus, gpus, max_conc = _resources(c, raw)
    misc = _check_misc(c, raw)
    stopper, asha = _check_stopper_asha(c, raw)
    _check_fixed(c, fixed, batch_sizes, alpha_choices or tuple(sorted(set(alpha))))
    epochs = fixed.get("epochs", TrainConfig().epochs)
    if _int(epochs) and last_k > epochs:
        if _gave_last_k(raw.get("objective")):
            c.bad("objective.last_k", last_k, f"an integer in [1, epochs={epochs}]")
        last_k = epochs  # the default window, shortened to the epochs there are
    if c.problems:
        raise SpecError(c.problems)
    return StudySpec(
        name=misc["name"], fixed=fixed, families=families, alpha=alpha,
        alpha_choices=alpha_choices,
        batch_sizes=batch_sizes, trials=misc["trials"], seeds=misc["seeds"],
        objectives=objectives, last_k=last_k, guards=guards, enqueue=enqueue,
        scheduler=misc["scheduler"], asha=asha, pruner=dict(raw.get("pruner") or {}),
        stopper=stopper, cpus_per_trial=cpus, gpus_per_trial=gpus, max_concurrent=max_conc,
        max_failures=misc["max_failures"], sampler_seed=misc["sampler_seed"],
        sampler_lag=None if misc["sampler_lag"] == "async" else misc["sampler_lag"], raw=raw,
    )


def load_spec(path: str | None = None, preset: str | None = None) -> StudySpec:
    """Read a spec file (``safe_load``) or a shipped preset."""
    if preset is not None:
        if preset not in PRESETS:
            raise SpecError([f"--preset: {preset!r} -- allowed: {list(PRESETS)}"])
        text = resources.files("study").joinpath(f"presets/{preset}.yaml").read_text("utf-8")
        where = f"preset {preset}"
    else:
        assert path is not None
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read(MAX_BYTES + 1)  # never more than the limit into memory
        except FileNotFoundError:
            raise SpecError([f"spec: {path!r} -- no such file"]) from None
        except UnicodeDecodeError:
            raise SpecError([f"spec: {path!r} -- not UTF-8 text"]) from None
        except IsADirectoryError:
            raise SpecError([f"spec: {path!r} -- is a folder, not a file"]) from None
        except OSError as exc:
            raise SpecError([f"spec: {path!r} -- cannot be read ({exc.strerror})"]) from None
        where = path
    try:
        raw = safe_load(text, f"spec {where}")
    except YamlLimitError as exc:
        raise SpecError([f"spec: {exc}"]) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise SpecError([f"spec: {where} -- not valid safe YAML ({first})"]) from None
    return parse_spec(raw)
