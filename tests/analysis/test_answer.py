"""What a user reads off a finished study, on the committed findings bundles (real studies):
how each gap closed (recomputed from the per-epoch records), the range-edge warning, a ranking
that fits a terminal, and the runs the MLflow link charts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from analysis import analyze, format_edges, get_edge_info
from tests.study.conftest import BIN

ROOT = Path(__file__).resolve().parents[2]
FASHION = str(ROOT / "docs" / "findings" / "closure-fashion.tar.gz")
MNIST = str(ROOT / "docs" / "findings" / "closure-mnist.tar.gz")


@pytest.fixture(scope="module")
def fashion():  # type: ignore[no-untyped-def]
    return analyze(FASHION)


@pytest.fixture(scope="module")
def mnist():  # type: ignore[no-untyped-def]
    return analyze(MNIST)


def test_delta_ce_columns_recomputed_from_the_records(mnist) -> None:  # type: ignore[no-untyped-def]
    h = mnist.data.history
    trials = mnist.trials
    base = trials[trials.baseline]
    for row in mnist.ranking.head(3).to_dict("records"):
        d_train, d_test, red = [], [], []
        for rid in row["run_ids"]:
            t = trials[trials.run_id == rid].iloc[0]
            mine = h[h.run_id == rid].sort_values("epoch").tail(5)  # the study's last_k = 5
            b = base[(base["p.seed"] == t["p.seed"]) & (base["p.batch_size"]
                                                       == t["p.batch_size"])]
            assert len(b) == 1
            theirs = h[(h.run_id == b.iloc[0].run_id) & h.epoch.isin(mine.epoch)]
            d_train.append(mine.train_ce.mean() - theirs.train_ce.mean())
            d_test.append(mine.test_ce.mean() - theirs.test_ce.mean())
            red.append((theirs.test_ce - theirs.train_ce).mean()
                       - (mine.test_ce - mine.train_ce).mean())
        assert row["delta_train_ce"] == pytest.approx(np.mean(d_train), abs=1e-12)
        assert row["delta_test_ce"] == pytest.approx(np.mean(d_test), abs=1e-12)
        # the identity, per schedule: test gap reduction = Δ train CE − Δ test CE
        assert row["test_gap_reduction"] == pytest.approx(
            row["delta_train_ce"] - row["delta_test_ce"], abs=1e-12)
        assert row["test_gap_reduction"] == pytest.approx(np.mean(red), abs=1e-12)


def test_range_edge_fires_on_the_fashion_winner(fashion) -> None:  # type: ignore[no-untyped-def]
    edges = {e.key: e for e in fashion.edges}
    alpha = edges["search.alpha"]  # α = 2.979 of [1.01, 3.0]
    assert alpha.bound == "high" and alpha.value == pytest.approx(2.979, abs=1e-3)
    assert alpha.near == 4 and alpha.top == 5  # four of the top 5 at α >= 2.77
    assert edges["search.batch_size"].bound == "low"  # batch 64, the smallest choice
    text = format_edges(fashion.edges)
    assert any("search.alpha" in t and "widen" in t for t in text)


def test_range_edge_is_silent_when_the_winner_is_inside(mnist) -> None:  # type: ignore[no-untyped-def]
    # MNIST's winner: power p = 1.065, α = 1.195, batch 64: inside α's and p's ranges...
    assert "search.alpha" not in {e.key for e in mnist.edges}
    assert {e.key for e in mnist.edges} == {"search.batch_size"}
    # ... and with 64 inside the batch sizes too, nothing is said
    search = {"families": {"power": {"exponent": [0.1, 2.0]}}, "alpha": [1.01, 3.0],
              "batch_size": [32, 64, 128]}
    assert get_edge_info(mnist.ranking, mnist.trials, search) == []


def test_rank_fits_120_columns_and_leads_with_the_selection() -> None:
    res = subprocess.run([str(BIN / "mistudy"), "rank", FASHION], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 120
    head = lines[0].split()
    assert head[:4] == ["#", "schedule", "val_red", "val_red_ci"]
    assert {"Δtrain", "Δtest", "from"} <= set(head)
    assert sum(1 for ln in lines if ln[:3].strip().isdigit()) == 30  # every schedule
    wide = subprocess.run([str(BIN / "mistudy"), "rank", FASHION, "--wide"],
                          capture_output=True, text=True, timeout=300)
    assert "delta_train_ce_ci_low" in wide.stdout and "closed_from" in wide.stdout


def test_the_ui_view_charts_the_top_schedules_with_their_baselines(mnist) -> None:  # type: ignore[no-untyped-def]
    from study._view import VISIBLE_RUNS, get_view_info

    info = get_view_info(mnist.ranking, mnist.trials)
    assert 0 < len(info.visible) <= VISIBLE_RUNS
    assert info.schedules[0] == mnist.ranking.iloc[0].schedule
    trials = mnist.trials.set_index("run_id")
    for label in info.schedules:
        row = mnist.ranking[mnist.ranking.schedule == label].iloc[0]
        assert row.feasible
        for rid in row.run_ids:  # each seed's matched baseline is visible beside it
            t = trials.loc[rid]
            assert any(trials.loc[b, "baseline"] and trials.loc[b, "p.seed"] == t["p.seed"]
                       and trials.loc[b, "p.batch_size"] == t["p.batch_size"]
                       for b in info.visible)
    assert sorted(info.order.values()) == list(range(1, len(info.order) + 1))
    assert [info.order[r] for r in info.visible] == list(range(1, len(info.visible) + 1))
