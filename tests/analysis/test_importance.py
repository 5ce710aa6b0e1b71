"""Importance on synthetic configurations where one parameter alone sets the value."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from analysis._importance import format_importance, get_importance_info
from analysis._load import frozen_to_dict

DIST = {"family": CategoricalDistribution(["exponential", "power"]),
        "alpha": FloatDistribution(1.01, 3.0),
        "batch_size": CategoricalDistribution([64, 128, 256]),
        "power.exponent": FloatDistribution(0.1, 2.0)}


def _trials(n: int, value, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        fam = ["exponential", "power"][i % 2]
        p = {"family": fam, "alpha": float(rng.uniform(1.01, 3.0)),
             "batch_size": int(rng.choice([64, 128, 256]))}
        if fam == "power":
            p["power.exponent"] = float(rng.uniform(0.1, 2.0))
        out.append({"state": "COMPLETE", "params": p,
                    "distributions": {k: DIST[k] for k in p},
                    "user_attrs": {"val_closure": value(p), "val_gap_reduction": 0.0}})
    return out


@pytest.mark.parametrize("evaluator", ["fanova", "ped_anova"])
def test_the_one_parameter_that_sets_closure_ranks_first(evaluator: str) -> None:
    info = get_importance_info(_trials(40, lambda p: -(p["alpha"] - 2.0) ** 2))
    for scope in ("all", "family=power", "family=exponential"):
        t = info.table[info.table.scope == scope]
        assert t.sort_values(evaluator, ascending=False).param.iloc[0] == "alpha", (scope, t)
        assert t[evaluator].sum() == pytest.approx(1.0)
    # the power family's own parameter appears only in its scope
    assert set(info.table[info.table.scope == "all"].param) == {"family", "alpha",
                                                                "batch_size"}
    assert "power.exponent" in set(info.table[info.table.scope == "family=power"].param)


@pytest.mark.parametrize("evaluator", ["fanova", "ped_anova"])
def test_a_family_parameter_drives_its_own_scope(evaluator: str) -> None:
    info = get_importance_info(_trials(
        40, lambda p: p.get("power.exponent", 1.0) * 2.0, seed=1))
    t = info.table[info.table.scope == "family=power"]
    # constant among the exponential family's configurations: nothing to explain there
    assert any("family=exponential" in s and "same on every" in s for s in info.skipped)
    assert t.sort_values(evaluator, ascending=False).param.iloc[0] == "power.exponent"


def test_failed_infeasible_and_valueless_configurations_and_small_scopes() -> None:
    trials = _trials(12, lambda p: p["alpha"])
    trials[0]["state"] = "FAIL"
    trials[1]["user_attrs"] = {}  # told FAIL before a value existed
    trials[2]["user_attrs"]["val_closure"] = float("nan")  # undefined closure
    info = get_importance_info(trials)
    assert set(info.table.n_trials[info.table.scope == "all"]) == {9}
    # 9 usable: 4 or 5 per family, below MIN_TRIALS for one of them -> skipped with a reason
    assert any("configurations with val_closure" in s for s in info.skipped)
    assert "importance for val_closure" in format_importance(info)


def test_reads_a_stored_optuna_study_through_its_frozen_trials() -> None:
    study = optuna.create_study(direction="maximize")
    for t in _trials(10, lambda p: p["alpha"]):
        study.add_trial(optuna.trial.create_trial(
            params=t["params"], distributions=t["distributions"], value=0.0,
            user_attrs=t["user_attrs"]))
    info = get_importance_info([frozen_to_dict(t) for t in study.trials])
    assert info.table[info.table.scope == "all"].sort_values(
        "fanova", ascending=False).param.iloc[0] == "alpha"
