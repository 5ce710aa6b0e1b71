"""Ranking math on hand-built runs with known answers, logged to a real MLflow store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from analysis import analyze, bootstrap_ci, pareto_front
from trainables.records import RECORD_KEYS

EPOCHS = 4


def log_trial(client: MlflowClient, exp: str, tid: str, *, family: str, seed: int, batch: int,
              gap: float, acc: float, baseline: bool = False, dpi_neg: int = 0,
              params: dict | None = None, drop: tuple[str, ...] = (),
              val_gap: float | None = None, val_acc: float | None = None) -> str:
    """One hand-built run: constant gaps and accuracies every epoch (validation equal to test
    unless ``val_gap`` / ``val_acc`` say otherwise), train CE 1."""
    run = client.create_run(exp, tags={"mistudy.role": "trial", "mistudy.trial_id": tid,
                                       "mistudy.study_id": "s1",
                                       "mistudy.baseline": str(baseline).lower()})
    rid = run.info.run_id
    p = {"dataset": "mnist", "model": "shallow", "batch_size": batch, "epochs": EPOCHS,
         "seed": seed, "alpha": 1.01, "transition.family": family, **(params or {})}
    client.log_batch(rid, params=[Param(k, str(v)) for k, v in p.items()])
    for e in range(EPOCHS):
        rec = {k: 0.5 for k in RECORD_KEYS}
        vg = gap if val_gap is None else val_gap
        rec.update(epoch=e, train_ce=1.0, test_ce=1.0 + gap, gap=gap, test_acc=acc,
                   val_ce=1.0 + vg, val_gap=vg, val_acc=acc if val_acc is None else val_acc,
                   mi_y_yhat=1.0 + 0.1 * e, mi_y_x=3.0, mi_grad_norm=0.1,
                   dpi_margin=-1.0 if e < dpi_neg else 1.0)
        client.log_batch(rid, metrics=[Metric(k, float(v), 0, e) for k, v in rec.items()
                                       if k not in drop])
    client.set_terminated(rid)
    return rid


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, MlflowClient]:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("hand", artifact_location=(tmp_path / "a").as_uri())
    common = {"params": {"transition.c": 1.0}}
    log_trial(client, exp, "b0", family="constant", seed=0, batch=64, gap=0.2, acc=0.9,
              baseline=True, **common)
    log_trial(client, exp, "b1", family="constant", seed=1, batch=64, gap=0.2, acc=0.9,
              baseline=True, **common)
    log_trial(client, exp, "b1dup", family="constant", seed=1, batch=64, gap=0.4, acc=0.9,
              baseline=True, **common)  # two baselines for one key: their mean (0.3) counts
    pw = {"params": {"transition.exponent": 0.5}}
    log_trial(client, exp, "p0", family="power", seed=0, batch=64, gap=0.1, acc=0.9,
              dpi_neg=1, **pw)
    log_trial(client, exp, "p1", family="power", seed=1, batch=64, gap=0.075, acc=0.88, **pw)
    ex = {"params": {"transition.rate": 0.3}}
    log_trial(client, exp, "e0", family="exponential", seed=0, batch=64, gap=0.02, acc=0.8,
              **ex)
    log_trial(client, exp, "u0", family="power", seed=0, batch=128, gap=0.1, acc=0.9,
              params={"transition.exponent": 2.0})  # no baseline at batch 128
    log_trial(client, exp, "m0", family="power", seed=0, batch=64, gap=0.1, acc=0.9,
              params={"transition.exponent": 1.0}, drop=("mi_y_x",))  # missing a metric
    # Closes the gap on validation only: selected by validation, its test closure is -0.5.
    log_trial(client, exp, "v0", family="power", seed=0, batch=64, gap=0.3, acc=0.9,
              val_gap=0.01, val_acc=0.85, params={"transition.exponent": 0.25})
    return uri, client


def test_closure_matching_guards_and_notes(store) -> None:
    uri, _ = store
    a = analyze("hand", uri, last_k=2, acc_tolerance=0.05)
    r = a.ranking.set_index("schedule")
    power = r.loc["power p=0.5 α=1.01 b64"]
    # seed 0: (0.2 - 0.1) / 0.2 = 0.5; seed 1: baselines 0.2 and 0.4 -> 0.3: (0.3 - 0.075)/0.3
    assert power.val_closure == pytest.approx((0.5 + 0.75) / 2)
    assert power.test_closure == pytest.approx((0.5 + 0.75) / 2)
    # reductions in nats: seed 0: 0.2 - 0.1; seed 1: 0.3 - 0.075
    assert power.val_gap_reduction == pytest.approx((0.1 + 0.225) / 2)
    assert power.n_seeds == 2
    assert power.delta_test_acc == pytest.approx(-0.01)
    assert not power.acc_drop
    assert power.dpi_violation_rate == pytest.approx(0.125)  # 1 of 4 epochs, 1 of 2 seeds
    expo = r.loc["exponential rate=0.3 α=1.01 b64"]
    assert expo.val_closure == pytest.approx(0.9) and expo.acc_drop  # closes by not learning
    assert np.isnan(expo.val_ci_low)  # one seed: no interval
    lone = r.loc["power p=2 α=1.01 b128"]
    assert np.isnan(lone.val_closure) and lone.n_unmatched == 1
    assert list(a.ranking.schedule)[-1] == lone.name  # unmatched schedules rank last
    assert any("m0" in n and "missing metrics" in n for n in a.notes)
    assert any("u0" in n and "no matched baseline" in n for n in a.notes)
    val_only = r.loc["power p=0.25 α=1.01 b64"]
    assert val_only.val_closure == pytest.approx((0.2 - 0.01) / 0.2)
    assert val_only.test_closure == pytest.approx((0.2 - 0.3) / 0.2)
    assert val_only.delta_val_acc == pytest.approx(-0.05)
    # Selected on validation only, with no guards in this study: v0, exponential, power.
    assert list(a.ranking.schedule)[:3] == [val_only.name, expo.name, power.name]
    # Pareto over (validation closure, Δ validation accuracy): v0 (0.95, -0.05) dominates
    # exponential (0.9, -0.1); power (0.625, -0.01) stays.
    assert set(a.ranking[a.ranking.pareto].schedule) == {power.name, val_only.name}


def test_guards_put_infeasible_schedules_after_feasible_ones(store) -> None:
    from analysis._rank import Selection, rank_schedules

    uri, _ = store
    a = analyze("hand", uri, last_k=2)
    guarded = rank_schedules(a.matched, selection=Selection("val_closure", max_acc_drop=0.02))
    order = list(guarded.schedule)
    # v0 (Δ val acc -0.05) and exponential (-0.1) break the 2-point guard; power (-0.01) not.
    assert order[0] == "power p=0.5 α=1.01 b64"
    feas = guarded.set_index("schedule").feasible
    assert feas["power p=0.5 α=1.01 b64"]
    assert not feas["exponential rate=0.3 α=1.01 b64"]
    assert not feas["power p=0.25 α=1.01 b64"]
    by_red = rank_schedules(a.matched, selection=Selection("val_gap_reduction"))
    assert list(by_red.schedule)[0] == "power p=0.25 α=1.01 b64"  # 0.19 nats, the largest


def test_bootstrap_interval_covers_the_mean_about_95_percent() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    reps = 300
    for i in range(reps):
        lo, hi = bootstrap_ci(rng.normal(1.0, 0.5, size=25), n_boot=2000, seed=i)
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / reps <= 0.99


def test_pareto_front_known_set() -> None:
    x = [0.1, 0.5, 0.4, 0.9, 0.5, float("nan")]
    y = [0.0, 0.2, 0.1, -0.3, 0.2, 1.0]
    assert pareto_front(x, y).tolist() == [False, True, False, True, True, False]


def test_bad_studies_exit_2_with_a_message(store, tmp_path: Path) -> None:
    uri, client = store
    exe = str(Path(sys.executable).with_name("mistudy"))
    res = subprocess.run([exe, "rank", "nope", "--tracking-uri", uri], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "unknown study 'nope'" in res.stderr and "hand" in res.stderr
    client.create_experiment("empty")
    res = subprocess.run([exe, "rank", "empty", "--tracking-uri", uri], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "no trial runs" in res.stderr
    res = subprocess.run([exe, "rank", "hand", "--tracking-uri", uri, "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and '"val_closure"' in res.stdout
    assert "no matched baseline" in res.stderr  # partial results, said so


def test_ranking_and_mlflow_tag_agree_on_the_saturation_epoch(store, tmp_path: Path) -> None:
    """Both use the study's own stopper settings (window 1, rel_tol 0.095 here): I(Y;Ŷ) =
    1.0, 1.1, 1.2, 1.3 changes by 10%, 9.1%, 8.3%, so it saturates at epoch 2 -- and never with
    the defaults (window 3, rel_tol 0.01), which the ranking used to apply."""
    import json

    from study._tracking import Tracker
    from trainables.saturation import saturation_epoch

    uri, client = store
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps(
        {"study_id": "s1", "name": "hand", "experiment": "hand", "tracking_uri": uri}))
    stopper = {"window": 1, "rel_tol": 0.095}
    (folder / "spec.yaml").write_text(f"name: hand\nstopper: {json.dumps(stopper)}\n")
    mi = [1.0 + 0.1 * e for e in range(EPOCHS)]
    assert saturation_epoch(mi) is None and saturation_epoch(mi, **stopper) == 2
    a = analyze(str(folder), last_k=2)
    ranked = a.trials.set_index("trial_id")
    assert ranked.loc["p0", "saturation_epoch"] == 2
    tracker = Tracker(uri, "hand", "s1", saturation=stopper)
    run_id = tracker.trial_runs()["p0"]
    hist = client.get_metric_history(run_id, "mi_y_yhat")
    records = [{k: 0.5 for k in RECORD_KEYS} | {"epoch": m.step, "mi_y_yhat": m.value,
                                                  "gap": 0.1, "test_acc": 0.9}
               for m in sorted(hist, key=lambda m: m.step)]
    tracker.finish_trial(run_id, records, {"transition": {"family": "power"}, "seed": 0,
                                           "batch_size": 64}, "FINISHED")
    tag = client.get_run(run_id).data.tags["mistudy.saturation_epoch"]
    assert tag == str(int(ranked.loc["p0", "saturation_epoch"]))
