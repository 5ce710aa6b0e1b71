"""``mistudy replay`` on a synthetic bundle whose trajectories are known: the epochs saved and
the top-K survivors are computed here by hand."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis._bundle import bundle_head, pack_bundle
from analysis._errors import StudyData
from analysis._replay import get_replay_info
from tests.study.conftest import BIN
from trainables.pruning import PruneRules
from trainables.records import RECORD_KEYS

EPOCHS = 10
SPEC = """name: synth
fixed: {dataset: mnist, model: shallow, epochs: 10}
search: {families: {power: {exponent: [0.1, 2.0]}}, alpha: [1.01, 3.0], batch_size: [64]}
trials: 8
seeds: [0, 1]
objective: {metric: val_gap_reduction, mode: max, last_k: 3, max_acc_drop: 0.01,
            max_ce_rise: 0.5}
"""


def _records(val_gap: float, val_acc: float) -> list[dict]:
    out = []
    for e in range(EPOCHS):
        r = {k: 0.5 for k in RECORD_KEYS}
        r.update(epoch=e, train_ce=1.0, val_ce=1.0 + val_gap, val_gap=val_gap, val_acc=val_acc,
                 test_ce=1.0 + val_gap, gap=val_gap, test_acc=val_acc, dpi_margin=1.0)
        out.append(r)
    return out


def _bundle(path: Path, reductions: list[float], accs: list[float], spec: str = SPEC) -> Path:
    runs, history = [], []

    def add(rid: str, config: dict, recs: list[dict], t: int, base: bool) -> None:
        runs.append({"run_id": rid, "status": "FINISHED", "study_id": "s", "trial_id": rid,
                     "baseline": base, "start_time": t, "phase": "search", "enqueued": False,
                     "config": config})
        history.extend({"run_id": rid, **r} for r in recs)

    fixed = {"dataset": "mnist", "model": "shallow", "epochs": EPOCHS, "batch_size": 64,
             "alpha": 1.5, "data_seed": 0}
    for s in (0, 1):
        add(f"b{s}", {**fixed, "seed": s, "transition": {"family": "constant", "c": 1.0},
                      "mistudy_baseline": True}, _records(0.2, 0.9), s, True)
    for i, (red, acc) in enumerate(zip(reductions, accs, strict=True)):
        for s in (0, 1):
            cfg = {**fixed, "seed": s,
                   "transition": {"family": "power", "exponent": 0.1 * (i + 1)}}
            add(f"c{i}s{s}", cfg, _records(0.2 - red, acc), 10 + 2 * i + s, False)
    runs_df = pd.DataFrame(runs)
    data = StudyData("x", "synth", "bundle:x", runs_df, pd.DataFrame(history), None)
    path.write_bytes(pack_bundle(bundle_head({"name": "synth"}), spec, data, [], None))
    return path


def test_replay_saves_the_hand_computed_epochs_and_keeps_the_top(tmp_path: Path) -> None:
    # c0..c5 reduce the gap by 0.01..0.06 at full accuracy; c6 loses 5 accuracy points from
    # the start; c7 widens the gap. Guard from epoch 5, median rule at epoch 6 (5 before).
    reds = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.03, -0.01]
    accs = [0.9] * 6 + [0.85, 0.9]
    bundle = _bundle(tmp_path / "synth.tar.gz", reds, accs)
    rules = PruneRules(grace=5, window=3, acc_drop=0.02, rungs=(6,), median_min=5,
                       quantile=0.5)
    info = get_replay_info(str(bundle), rules, k=5)
    pruned = info.trials[info.trials.pruned_at.notna()]
    by = {s: (int(g.pruned_at.iloc[0]), g.rule.iloc[0]) for s, g in pruned.groupby("schedule")}
    assert by == {"power p=0.7 α=1.5 b64": (5, "accuracy guard"),
                  "power p=0.8 α=1.5 b64": (6, "median rule at epoch 6")}
    # c6: 2 seeds x (10 - 5) epochs; c7: 2 x (10 - 6); of 8 configurations x 2 x 10 epochs
    assert (info.epochs_saved, info.epochs_total) == (2 * 5 + 2 * 4, 160)
    assert info.top_k == [f"power p={p} α=1.5 b64" for p in ("0.6", "0.5", "0.4", "0.3",
                                                             "0.2")]
    assert info.top_k_kept == info.top_k
    res = subprocess.run([str(BIN / "mistudy"), "replay", str(bundle), "--format", "json",
                          "--grace", "5", "--window", "3", "--acc-drop", "0.02",
                          "--ce-rise", "off", "--rungs", "6", "--median-min", "5",
                          "--quantile", "0.5"], capture_output=True, text=True, timeout=300)
    data = json.loads(res.stdout)
    assert data["epochs_saved_fraction"] == pytest.approx(18 / 160)
    assert data["top_k_kept"] == data["top_k"] and len(data["top_k"]) == 5


def test_replay_reports_a_top_schedule_it_would_have_lost(tmp_path: Path) -> None:
    # the best configuration comes first: every later one is below what came before it.
    # The asynchronous search's rule: each compares with every configuration before it.
    reds = [0.06, 0.05, 0.04, 0.03, 0.02, 0.01, 0.005, 0.001]
    bundle = _bundle(tmp_path / "desc.tar.gz", reds, [0.9] * 8,
                     SPEC + "sampler_lag: async\n")
    rules = PruneRules(grace=5, window=3, acc_drop=0.02, rungs=(6,), median_min=1,
                       quantile=0.5)
    info = get_replay_info(str(bundle), rules, k=5)
    # c1 (0.05) is below c0 (0.06) at epoch 6: pruned, and it is the second best
    assert "power p=0.2 α=1.5 b64" in info.pruned_schedules
    assert info.top_k[1] == "power p=0.2 α=1.5 b64"
    assert info.top_k_kept == [info.top_k[0]]  # every later configuration is below the median


def test_replay_follows_the_ordered_searchs_lag(tmp_path: Path) -> None:
    """The ordered search (sampler_lag 2, the default): configuration k compares with 0..k-2
    only. By hand: c1 has no earlier configuration and is kept; c2 (0.04) < c0 (0.06); c3
    (0.03) < median(0.06, 0.05); c4..c7 compare with c0, c1 (c2.. were pruned at the rung, so
    they never reached it) and are pruned."""
    reds = [0.06, 0.05, 0.04, 0.03, 0.02, 0.01, 0.005, 0.001]
    bundle = _bundle(tmp_path / "desc.tar.gz", reds, [0.9] * 8)
    rules = PruneRules(grace=5, window=3, acc_drop=0.02, rungs=(6,), median_min=1,
                       quantile=0.5)
    info = get_replay_info(str(bundle), rules, k=5)
    assert sorted(info.pruned_schedules) == sorted(
        f"power p={0.1 * (i + 1):.1f} α=1.5 b64" for i in range(2, 8))
    assert info.top_k_kept == info.top_k[:2]
    assert info.epochs_saved == 6 * 2 * (EPOCHS - 6)
