from __future__ import annotations

import itertools
import math

import pytest

from trainables.schedules import FAMILIES, transition, validate_transition


def _grid(family: str) -> list[dict]:
    """Parameter settings at each declared bound and the default."""
    params = FAMILIES[family].params
    values = [sorted({p.low, p.high, p.default}) for p in params]
    out = []
    for combo in itertools.product(*values):
        spec = {"family": family}
        for p, v in zip(params, combo):
            spec[p.name] = int(v) if p.integer else v
        out.append(validate_transition(spec))
    return out


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "constant"])
def test_families_start_at_one_stay_in_unit_interval_and_never_increase(family: str) -> None:
    for spec in _grid(family):
        values = [transition(spec, e) for e in range(300)]
        assert values[0] == pytest.approx(1.0, abs=1e-12), spec
        assert all(0.0 <= v <= 1.0 for v in values), spec
        assert all(b <= a + 1e-12 for a, b in zip(values, values[1:])), spec


def test_power_is_the_papers_schedule() -> None:
    spec = validate_transition({"family": "power", "exponent": 0.5})
    for e in range(10):
        assert transition(spec, e) == pytest.approx(1 / math.sqrt(1 + e))


def test_family_formulas() -> None:
    assert transition(validate_transition({"family": "exponential", "rate": 0.5}), 2) == \
        pytest.approx(math.exp(-1))
    lin = validate_transition({"family": "linear", "floor": 0.2, "duration": 4})
    assert [transition(lin, e) for e in (0, 2, 4, 9)] == pytest.approx([1, 0.6, 0.2, 0.2])
    cos = validate_transition({"family": "cosine", "floor": 0.0, "duration": 10})
    assert transition(cos, 5) == pytest.approx(0.5)
    step = validate_transition({"family": "step", "step_epoch": 3, "value": 0.25})
    assert [transition(step, e) for e in range(5)] == [1, 1, 1, 0.25, 0.25]
    sig = validate_transition({"family": "sigmoid", "midpoint": 10, "steepness": 1.0})
    assert transition(sig, 10) == pytest.approx((1 + math.exp(-10)) / 2)


def test_constant_one_is_the_baseline() -> None:
    base = validate_transition({"family": "constant"})
    assert base == {"family": "constant", "c": 1.0}
    assert all(transition(base, e) == 1.0 for e in range(5))  # plain CE at every epoch
    assert transition(validate_transition({"family": "constant", "c": 0.5}), 3) == 0.5
    assert transition(validate_transition({"family": "power"}), 3) < 1.0


@pytest.mark.parametrize("spec, fragment", [
    ({"family": "nope"}, "transition.family='nope' is unknown"),
    ({"family": "power", "exponent": -1}, "transition.exponent=-1"),
    ({"family": "power", "exponent": "a"}, "must be a number"),
    ({"family": "linear", "duration": 2.5}, "must be an integer"),
    ({"family": "power", "rate": 1}, "transition.rate is not a parameter"),
    ({"family": "step", "value": True}, "transition.value=True"),
])
def test_bad_transition_specs_name_the_key_and_allowed_values(spec: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_transition(spec)
    assert fragment in str(info.value) and "\n" not in str(info.value)
