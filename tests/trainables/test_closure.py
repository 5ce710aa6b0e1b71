"""The closure rule's comparison against matched baselines: how a gap closed (Δ train CE and Δ
CE on each split) checked against an identity and against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainables.closure import SIDE_SHARE, closing_side, compare, match_key


def _records(rng: np.random.Generator, epochs: int) -> list[dict[str, float]]:
    out = []
    for e in range(epochs):
        train, val, test = (float(x) for x in rng.uniform(0.05, 1.5, size=3))
        out.append({"epoch": e, "train_ce": train, "val_ce": val, "test_ce": test,
                    "val_gap": val - train, "gap": test - train,
                    "val_acc": float(rng.uniform()), "test_acc": float(rng.uniform())})
    return out


@pytest.mark.parametrize("seed", range(20))
def test_gap_reduction_is_delta_train_ce_minus_delta_split_ce(seed: int) -> None:
    rng = np.random.default_rng(seed)
    trial = _records(rng, 8)
    baselines = [_records(rng, 8), _records(rng, 10)]
    c = compare(trial, baselines, last_k=3)
    for split in ("val", "test"):
        assert c[f"{split}_gap_reduction"] == pytest.approx(
            c["train_ce_delta"] - c[f"{split}_ce_delta"], abs=1e-12)


def test_deltas_by_hand() -> None:
    # trial: train CE 0.30, 0.40 over the window (epochs 2, 3); test CE 0.50, 0.52
    trial = [{"epoch": e, "train_ce": t, "test_ce": s, "val_ce": s, "gap": s - t,
              "val_gap": s - t, "val_acc": 0.9, "test_acc": 0.9}
             for e, t, s in ((0, 2.0, 2.0), (1, 1.0, 1.1), (2, 0.30, 0.50), (3, 0.40, 0.52))]
    # two baselines over the same epochs: train CE 0.10 / 0.20 and 0.12 / 0.18, test 0.50 flat
    bases = [[{"epoch": e, "train_ce": t, "test_ce": 0.5, "val_ce": 0.5, "gap": 0.5 - t,
               "val_gap": 0.5 - t, "val_acc": 0.9, "test_acc": 0.9}
              for e, t in enumerate(ts)] for ts in ((9, 9, 0.10, 0.20), (9, 9, 0.12, 0.18))]
    c = compare(trial, bases, last_k=2)
    base_train = ((0.10 + 0.20) / 2 + (0.12 + 0.18) / 2) / 2  # 0.15
    assert c["train_ce_delta"] == pytest.approx(0.35 - base_train)  # +0.20: train CE up
    assert c["test_ce_delta"] == pytest.approx(0.51 - 0.5)  # +0.01
    assert c["test_gap_reduction"] == pytest.approx((0.5 - base_train) - (0.51 - 0.35))
    assert closing_side(c["train_ce_delta"], c["test_ce_delta"]) == "below"


@pytest.mark.parametrize("train, split, side", [
    (0.05, 0.01, "below"),       # train CE up, split CE up less: all the movement is below
    (0.00, -0.03, "above"),      # split CE down, train CE flat
    (-0.01, -0.04, "above"),     # train CE down a little, split CE down more
    (0.02, -0.02, "both"),       # half and half
    (0.03, 0.05, "none"),        # the gap widened
    (math.nan, 0.0, ""),         # undefined
])
def test_closing_side(train: float, split: float, side: str) -> None:
    assert closing_side(train, split) == side


def test_the_side_threshold_is_the_share_of_the_movement() -> None:
    # below carries exactly SIDE_SHARE of the movement -> "below"; a hair less -> "both"
    above = 1.0
    below = SIDE_SHARE / (1 - SIDE_SHARE) * above
    assert closing_side(below, -above) == "below"
    assert closing_side(below * 0.99, -above) == "both"


def test_the_split_draw_is_a_matching_key() -> None:
    a = {"dataset": "mnist", "model": "shallow", "batch_size": 64, "epochs": 30, "seed": 5}
    assert match_key({**a, "data_seed": 1}) != match_key({**a, "data_seed": 2})
    assert match_key({**a, "data_seed": 1}) == match_key({**a, "data_seed": 1.0})
