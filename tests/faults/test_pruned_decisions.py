"""What a pruned configuration is, everywhere (issue 35, items 1-3 and 6): on a live study
with the closure pruner, both guards and a ``val_ce`` objective, Optuna's last intermediate
value for a pruned configuration is the score ``pruning.json`` keeps (never a guard's bound),
its runs carry the PRUNED tag, and rank, export and replay treat it as pruned.
One real study (Ray, MLflow, Fashion-MNIST files) shared by the module's tests."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tests.study.conftest import (
    firing_closure_spec,
    mistudy,
    require_loopback,
    store_uri,
    study_runs,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.faults]


@pytest.fixture(scope="module")
def pruned_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_loopback()
    tmp = tmp_path_factory.mktemp("pruned")
    # Δ val CE > -100 holds for every configuration: the CE guard fires at the grace epoch;
    # the objective is val_ce (minimized), the guards make the study compare with baselines
    spec = firing_closure_spec(tmp / "spec.yaml", trials=3, seeds=[0, 1], fixed={"epochs": 4},
                               enqueue=[{"transition": {"family": "power", "exponent": 0.5},
                                         "alpha": 1.01}],
                               objective={"metric": "val_ce", "mode": "min", "last_k": 1,
                                          "max_acc_drop": 0.5, "max_ce_rise": 5.0})
    out = tmp / "s"
    res = mistudy("run", str(spec), "--out", str(out), "--quiet", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _optuna(out: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")


def test_optuna_is_told_the_pruned_score_not_a_guard_bound(pruned_study: Path) -> None:
    decisions = json.loads((pruned_study / "pruning.json").read_text())["pruned"]
    assert sorted(decisions) == ["1", "2"]
    study = _optuna(pruned_study)
    for n, (epoch, rule, score) in decisions.items():
        t = study.trials[int(n)]
        assert t.state == optuna.trial.TrialState.PRUNED and rule == "CE guard"
        assert max(t.intermediate_values) == epoch
        assert t.intermediate_values[epoch] == pytest.approx(score, abs=0, rel=1e-12)
        # the score is the objective's own (val_ce, nats near ln 10 early on), not a bound
        assert 0.5 < score < 3.0
        bounds = [v for k, v in t.system_attrs.items() if k.startswith("constraints")]
        assert all(score != pytest.approx(b) for b in bounds)


def test_pruned_runs_are_tagged_and_ranked_as_pruned(pruned_study: Path,
                                                     tmp_path: Path) -> None:
    _, children = study_runs(store_uri(pruned_study), "tiny", pruned_study)
    told = {c.data.tags.get("mistudy.optuna_trial"): c.data.tags.get("mistudy.told")
            for c in children if c.data.tags.get("mistudy.optuna_trial") not in (None, "")}
    assert told == {"0": "COMPLETE", "1": "PRUNED", "2": "PRUNED"}
    rows = json.loads(mistudy("rank", str(pruned_study), "--format", "json").stdout)
    pruned = [r for r in rows if r["pruned"]]
    assert len(pruned) == 2 and not any(r["feasible"] for r in pruned)
    assert not rows[0]["pruned"]  # the finished one first, whatever the early values say
    res = mistudy("export", str(pruned_study), "--out", str(tmp_path / "x"), "--top", "5",
                  "--include-flagged")
    assert res.returncode == 0, res.stderr
    configs = [p for p in (tmp_path / "x").glob("*.yaml") if not p.name.endswith(".study.yaml")]
    assert len(configs) == len([r for r in rows if not r["pruned"]]) == 1


def test_the_told_tags_come_back_after_they_were_lost(pruned_study: Path) -> None:
    """A tag the searcher could not log (a run not created yet, a store down, a kill) is
    restored from Optuna by the next reconcile (here: ``mistudy sync``)."""
    import mlflow

    client = mlflow.MlflowClient(store_uri(pruned_study))
    _, children = study_runs(store_uri(pruned_study), "tiny", pruned_study)
    victims = [c for c in children if c.data.tags.get("mistudy.told") == "PRUNED"]
    for c in victims:
        client.delete_tag(c.info.run_id, "mistudy.told")
    res = mistudy("sync", "--out", str(pruned_study))
    assert res.returncode == 0, res.stderr
    for c in victims:
        assert client.get_run(c.info.run_id).data.tags.get("mistudy.told") == "PRUNED"


def test_replay_of_a_live_pruned_study_leaves_the_pruned_out(pruned_study: Path) -> None:
    res = mistudy("replay", str(pruned_study), "--format", "json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert len(info["live_pruned"]) == 2
    assert info["epochs_saved"] >= 0 and info["epochs_total"] == 2 * 4  # the finished one
    assert not set(info["top_k"]) & set(info["live_pruned"])
    text = mistudy("replay", str(pruned_study)).stdout
    assert "left out: 2 configurations the study pruned live" in text


def test_the_shared_view_draws_one_line_per_schedule(pruned_study: Path) -> None:
    """Issue 37: the view the ``mistudy ui`` link opens groups the trial runs by their chart
    group, with grouped values in the charts: a schedule's seeds share one group, the baseline
    is a group of its own, pruned runs are a group apart."""
    import mlflow

    from study._view import SHARE_TAG

    client = mlflow.MlflowClient(store_uri(pruned_study))
    exp = client.get_experiment_by_name("tiny")
    state = json.loads(exp.tags[SHARE_TAG])
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "group"}]
    assert state["useGroupedValuesInCharts"] is True
    _, children = study_runs(store_uri(pruned_study), "tiny", pruned_study)
    groups: dict[str, set[str]] = {}
    for c in children:
        groups.setdefault(c.data.tags["group"], set()).add(c.data.tags["mistudy.seed"])
    assert all(seeds == {"0", "1"} for seeds in groups.values())  # one line, both seeds
    assert "CE b50" in groups
    assert sum(g.startswith("pruned: ") for g in groups) == 2
    assert len(groups) == 1 + 1 + 2  # the finished schedule, the baseline, two pruned
