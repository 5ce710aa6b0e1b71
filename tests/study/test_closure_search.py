"""A real tiny closure study (validation gap reduction under both guards, the paper's schedule
enqueued), then `mistudy confirm`: every number checked against a recomputation from Tune's own
per-epoch records (result.json), not from the code under test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from tests.study.conftest import mistudy, tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

LAST_K = 2
GUARDS = {"max_acc_drop": 0.5, "max_ce_rise": 0.5}


def _results(exp_dir: Path) -> list[dict[str, Any]]:
    """Every Tune trial of one experiment: its config and per-epoch records."""
    out = []
    for trial in sorted(exp_dir.iterdir()):
        if (trial / "result.json").is_file():
            rows = [json.loads(ln) for ln in (trial / "result.json").read_text().splitlines()]
            out.append({"config": rows[0]["config"], "records": rows})
    return out


def _window_mean(records: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in records[-LAST_K:]]))


def _baseline(runs: list[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    found = [r for r in runs if r["config"].get("mistudy_baseline")
             and r["config"]["batch_size"] == cfg["batch_size"]
             and r["config"]["seed"] == cfg["seed"]
             and r["config"].get("data_seed") == cfg.get("data_seed")]
    assert len(found) == 1, cfg
    return found[0]


@pytest.fixture(scope="module")
def closure_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("closure")
    spec = tiny_spec(
        root / "spec.yaml", trials=3, seeds=[0, 1],
        enqueue=[{"transition": {"family": "power", "exponent": 0.5}, "alpha": 1.01}],
        objective={"metric": "val_gap_reduction", "mode": "max", "last_k": LAST_K, **GUARDS})
    out = root / "study"
    run = mistudy("run", str(spec), "--out", str(out), "--quiet", timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    conf = mistudy("confirm", str(out), "--top", "2", "--seeds", "2", "--quiet", timeout=900)
    assert conf.returncode == 0, conf.stderr[-3000:]
    return {"out": out, "run": run, "confirm": conf}


def _optuna(out: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")


def test_enqueued_first_and_told_values_equal_the_recomputed_reduction(
        closure_study: dict) -> None:
    out = closure_study["out"]
    runs = _results(out / "ray" / "tiny")
    study = _optuna(out)
    first = study.trials[0]
    assert first.params == {"family": "power", "power.exponent": 0.5, "alpha": 1.01}
    assert first.user_attrs.get("enqueued") is True
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE, t
        seeds = [r for r in runs if r["config"].get("optuna_trial") == t.number]
        assert sorted(r["config"]["seed"] for r in seeds) == [0, 1]
        red, acc, ce = [], [], []
        for r in seeds:
            b = _baseline(runs, r["config"])["records"]
            red.append(_window_mean(b, "val_gap") - _window_mean(r["records"], "val_gap"))
            acc.append(_window_mean(r["records"], "val_acc") - _window_mean(b, "val_acc"))
            ce.append(_window_mean(r["records"], "val_ce") - _window_mean(b, "val_ce"))
        assert t.value == pytest.approx(np.mean(red), rel=1e-9, abs=1e-12)
        # the guards, stored as Optuna constraints (<= 0 is feasible)
        cons = t.user_attrs["constraints"]
        assert cons["max_acc_drop"] == pytest.approx(-np.mean(acc) - GUARDS["max_acc_drop"])
        assert cons["max_ce_rise"] == pytest.approx(np.mean(ce) - GUARDS["max_ce_rise"])
        assert t.user_attrs["feasible"] == (max(cons.values()) <= 0)
        for name, value in cons.items():  # what TPE reads (Trial.set_constraint)
            assert t.system_attrs[f"constraints:{name}"] == pytest.approx(value)


def test_each_seeds_mlflow_run_carries_what_optuna_was_told(closure_study: dict) -> None:
    """The searcher's told values on every searched seed's MLflow run: the state as a tag, the
    seed's own validation gap reduction (recomputed from Tune's records) as a one-number
    column, and no extra point in the per-epoch histories of the same-named record keys."""
    from mlflow.tracking import MlflowClient

    from trainables.records import tag

    out = closure_study["out"]
    runs = _results(out / "ray" / "tiny")
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    by_trial = {r.data.tags[tag("trial_id")]: r for r in client.search_runs(
        [exp.experiment_id], f"tags.`{tag('role')}` = 'trial'", max_results=1000)}
    searched = [r for r in runs if not r["config"].get("mistudy_baseline")]
    assert len(searched) == 6  # 3 configurations x 2 seeds
    for r in searched:
        run = by_trial[r["records"][0]["trial_id"]]
        assert run.data.tags[tag("told")] == "COMPLETE"
        b = _baseline(runs, r["config"])["records"]
        red = _window_mean(b, "val_gap") - _window_mean(r["records"], "val_gap")
        assert run.data.metrics["val_gap_reduction"] == pytest.approx(red, rel=1e-9, abs=1e-12)
        steps = [int(m.step) for m in client.get_metric_history(run.info.run_id, "val_gap")]
        assert sorted(steps) == [int(x["epoch"]) for x in r["records"]]


def test_confirm_reruns_the_top_on_fresh_seeds_and_reports_the_shrinkage(
        closure_study: dict) -> None:
    from analysis import analyze

    out = closure_study["out"]
    plan = json.loads((out / "confirm.json").read_text())
    assert plan["seeds"] == [2, 3]  # never used by the search (seeds 0 and 1)
    assert plan["data_seeds"] == [1, 2]  # split draws the search never used (it used 0)
    search = _results(out / "ray" / "tiny")
    runs = _results(out / "ray" / "tiny-confirm")
    assert {r["config"]["seed"] for r in runs} == {2, 3}
    assert all(r["config"]["mistudy_phase"] == "confirm" for r in runs)
    # each fresh seed on its own fresh draw, never the study's; every run has its baseline
    # on the same seed and draw (_baseline asserts exactly one)
    assert {(r["config"]["seed"], r["config"]["data_seed"]) for r in runs} == {(2, 1), (3, 2)}
    assert all(r["config"]["data_seed"] != 0 for r in runs)
    ranking = analyze(str(out)).ranking
    top = ranking[ranking.feasible].head(2)
    assert [s["schedule"] for s in plan["schedules"]] == list(top.schedule)
    text = (out / "confirm.md").read_text()
    for s in plan["schedules"]:
        mine = [r for r in runs if not r["config"].get("mistudy_baseline")
                and r["config"]["transition"] == s["transition"]
                and r["config"]["batch_size"] == s["batch_size"]]
        assert sorted(r["config"]["seed"] for r in mine) == [2, 3]
        confirmed = np.mean([_window_mean(_baseline(runs, r["config"])["records"], "gap")
                             - _window_mean(r["records"], "gap") for r in mine])
        d_train = np.mean([_window_mean(r["records"], "train_ce") - _window_mean(
            _baseline(runs, r["config"])["records"], "train_ce") for r in mine])
        d_test = np.mean([_window_mean(r["records"], "test_ce") - _window_mean(
            _baseline(runs, r["config"])["records"], "test_ce") for r in mine])
        searched = [r for r in search if not r["config"].get("mistudy_baseline")
                    and r["config"]["transition"] == s["transition"]
                    and r["config"]["batch_size"] == s["batch_size"]]
        in_search = np.mean([_window_mean(_baseline(search, r["config"])["records"], "val_gap")
                             - _window_mean(r["records"], "val_gap") for r in searched])
        line = next(ln.strip() for ln in text.splitlines()
                    if ln.strip().startswith(s["schedule"] + " "))
        cells = line[len(s["schedule"]):].split()
        # columns: search val, search test, confirmed test, ci low, ci high, shrinkage,
        # Δ test acc, Δ train CE, its ci low, ci high, Δ test CE, its ci low, ci high, side
        assert float(cells[0]) == pytest.approx(in_search, abs=6e-5)
        assert float(cells[2]) == pytest.approx(confirmed, abs=6e-5)
        assert float(cells[5]) == pytest.approx(in_search - confirmed, abs=1.2e-4)
        assert float(cells[7]) == pytest.approx(d_train, abs=6e-5)
        assert float(cells[10]) == pytest.approx(d_test, abs=6e-5)
        assert d_train - d_test == pytest.approx(confirmed, abs=1e-12)  # the identity
    assert "transfer (Spearman" in closure_study["confirm"].stdout


def test_a_rerun_of_confirm_resumes_its_plan_and_refuses_another(closure_study: dict) -> None:
    out = closure_study["out"]
    again = mistudy("confirm", str(out), "--top", "3", "--quiet", timeout=300)
    assert again.returncode == 2 and "--top" in again.stderr
    same = mistudy("confirm", str(out), "--quiet", timeout=600)
    assert same.returncode == 0, same.stderr[-2000:]
    assert len(_results(out / "ray" / "tiny-confirm")) == 2 * 2 + 2  # nothing ran twice


def test_bundle_reranks_like_the_folder_and_importance_reads_it(closure_study: dict,
                                                                tmp_path: Path) -> None:
    import pandas as pd

    from analysis import analyze

    out = closure_study["out"]
    bundle = tmp_path / "tiny.tar.gz"
    res = mistudy("export", str(out), "--bundle", str(bundle))
    assert res.returncode == 0, res.stderr
    assert bundle.stat().st_size < 2_000_000
    a, b = analyze(str(out)), analyze(str(bundle))
    pd.testing.assert_frame_equal(a.ranking.drop(columns="run_ids"),
                                  b.ranking.drop(columns="run_ids"))
    ca, cb = (analyze(str(x), phase="confirm") for x in (out, bundle))
    pd.testing.assert_frame_equal(ca.ranking.drop(columns="run_ids"),
                                  cb.ranking.drop(columns="run_ids"))
    rank = mistudy("rank", str(bundle), "--importance")
    assert rank.returncode == 0 and "importance for val_gap_reduction" in rank.stdout
    rep = mistudy("report", str(bundle), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0, rep.stderr
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Confirmation on fresh seeds" in page and "alt=\"confirm\"" in page
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(bundle.read_bytes()[:300])
    bad = mistudy("rank", str(broken))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
