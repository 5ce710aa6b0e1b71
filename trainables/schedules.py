"""Transition functions ``f(epoch)`` for ``L = f·CE − (1 − f)·I(Y;Ŷ)``.

Every family but ``constant`` starts at ``f(0) = 1`` (CE as the ignitor: the gradient of
``I(Y;Ŷ)`` vanishes at initialization), stays in ``[0, 1]`` and never increases.
``constant`` with ``c = 1`` is the plain cross-entropy baseline.

Each family declares its parameters with valid ranges (inclusive); the study's default search
space is built from these declarations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Param", "Family", "FAMILIES", "transition", "validate_transition"]


@dataclass(frozen=True)
class Param:
    name: str
    low: float
    high: float
    default: float
    integer: bool = False
    log: bool = False  # search on a log scale
    doc: str = ""

    def check(self, value: Any, family: str) -> float:
        ok_type = isinstance(value, int) if self.integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            kind = "an integer" if self.integer else "a number"
            raise ValueError(
                f"transition.{self.name}={value!r} for family {family!r} must be {kind} "
                f"in [{self.low:g}, {self.high:g}]"
            )
        v = float(value)
        if not (self.low <= v <= self.high) or math.isnan(v):
            raise ValueError(
                f"transition.{self.name}={value!r} for family {family!r} is out of range; "
                f"allowed: [{self.low:g}, {self.high:g}]"
            )
        return v


@dataclass(frozen=True)
class Family:
    name: str
    params: tuple[Param, ...]
    fn: Callable[..., float]
    doc: str

    def __call__(self, epoch: int, **params: float) -> float:
        return float(self.fn(epoch, **params))

    def defaults(self) -> dict[str, float]:
        return {p.name: (int(p.default) if p.integer else p.default) for p in self.params}


def _power(e: int, exponent: float) -> float:
    return (1.0 + e) ** -exponent


def _exponential(e: int, rate: float) -> float:
    return math.exp(-rate * e)


def _linear(e: int, floor: float, duration: int) -> float:
    return max(floor, 1.0 - (1.0 - floor) * e / duration)


def _cosine(e: int, floor: float, duration: int) -> float:
    t = min(e, duration) / duration
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def _step(e: int, step_epoch: int, value: float) -> float:
    return 1.0 if e < step_epoch else value


def _sigmoid(e: int, midpoint: float, steepness: float) -> float:
    # Normalized so f(0) = 1 exactly: (1 + exp(-s m)) / (1 + exp(s (e - m))).
    z = steepness * (e - midpoint)
    if z > 700:  # exp overflow; f is ~0 there
        return 0.0
    return (1.0 + math.exp(-steepness * midpoint)) / (1.0 + math.exp(z))


def _constant(e: int, c: float) -> float:
    return c


_FLOOR = Param("floor", 0.0, 1.0, 0.0, doc="final CE weight")
_DURATION = Param("duration", 1, 500, 20, integer=True, doc="epochs to reach the floor")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("power", (Param("exponent", 0.0, 4.0, 0.5, doc="p in (1+e)^-p"),), _power,
               "(1 + epoch)^-exponent; the paper's exponent = 0.5"),
        Family("exponential", (Param("rate", 1e-3, 3.0, 0.1, log=True, doc="per epoch"),),
               _exponential, "exp(-rate * epoch)"),
        Family("linear", (_FLOOR, _DURATION), _linear, "linear from 1 to floor over duration"),
        Family("cosine", (_FLOOR, _DURATION), _cosine, "half-cosine from 1 to floor"),
        Family("step", (Param("step_epoch", 1, 500, 5, integer=True, doc="first mixed epoch"),
                        Param("value", 0.0, 1.0, 0.5, doc="CE weight after the step")),
               _step, "CE only before step_epoch, then the fixed weight value"),
        Family("sigmoid", (Param("midpoint", 0.0, 200.0, 10.0, doc="epoch of the half-way"),
                           Param("steepness", 0.01, 5.0, 0.5, log=True, doc="per epoch")),
               _sigmoid, "logistic hand-over, normalized to f(0) = 1"),
        Family("constant", (Param("c", 0.0, 1.0, 1.0, doc="CE weight"),), _constant,
               "f = c; c = 1 is the plain-CE baseline"),
    )
}


def validate_transition(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``{"family": ..., **params}`` mapping; fill defaults; raise ``ValueError``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"transition={spec!r} must be a mapping with a 'family' key")
    name = spec.get("family")
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f"transition.family={name!r} is unknown; allowed: {sorted(FAMILIES)}")
    fam = FAMILIES[name]
    known = {p.name for p in fam.params}
    extra = sorted(map(str, set(spec) - known - {"family"}))
    if extra:
        raise ValueError(
            f"transition.{extra[0]} is not a parameter of family {name!r}; "
            f"allowed: {sorted(known)}"
        )
    out: dict[str, Any] = {"family": name}
    for p in fam.params:
        v = spec.get(p.name, p.default)
        p.check(v, name)
        out[p.name] = int(v) if p.integer else float(v)
    return out


def transition(spec: Mapping[str, Any], epoch: int) -> float:
    """``f(epoch)`` for a validated transition spec."""
    params = {k: v for k, v in spec.items() if k != "family"}
    return FAMILIES[spec["family"]](epoch, **params)
