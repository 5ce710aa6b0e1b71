from __future__ import annotations

import math

import pytest
import torch

from trainables import RECORD_KEYS, TrainConfig, Trainer, run_trial
from trainables.information import gram_matrix, label_mutual_information
from trainables.models import ShallowCNN, build_model

SMALL = {"dataset": "fashion_mnist", "train_size": 1000, "val_size": 200, "test_size": 200,
         "batch_size": 100, "device": "cpu", "kernel": {"calibration_batches": 3}}


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in records]


def test_shallow_cnn_size_matches_the_paper() -> None:
    n = sum(p.numel() for p in ShallowCNN().parameters())
    assert 40_000 <= n <= 48_000
    assert build_model("shallow")(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_resnet18_resizes_on_the_fly_and_replicates_channels() -> None:
    model = build_model("resnet18", input_size=64)
    assert 11_000_000 < sum(p.numel() for p in model.parameters()) < 11_300_000
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_records_have_every_key_and_consistent_derived_values() -> None:
    cfg = TrainConfig.from_dict({**SMALL, "epochs": 2})
    records = run_trial(cfg)
    assert len(records) == 2
    for e, r in enumerate(records):
        assert tuple(r) == RECORD_KEYS and r["epoch"] == e
        assert all(math.isfinite(v) for v in r.values())
        assert r["gap"] == pytest.approx(r["test_ce"] - r["train_ce"])
        assert r["val_gap"] == pytest.approx(r["val_ce"] - r["train_ce"])
        assert r["dpi_margin"] == pytest.approx(r["mi_y_x"] - r["mi_y_yhat"])
        assert 0 <= r["mi_y_yhat"] <= math.log2(10) + 1e-6
    assert records[0]["transition"] == 1.0
    assert records[1]["transition"] == pytest.approx(2 ** -0.5)


def test_seeded_runs_are_identical_and_seeds_differ() -> None:
    cfg = TrainConfig.from_dict({**SMALL, "epochs": 2})
    a, b = _strip(run_trial(cfg)), _strip(run_trial(cfg))
    assert a == b
    c = _strip(run_trial(cfg.with_updates(seed=1)))
    assert c != a


def test_resume_from_state_dict_continues_bit_for_bit(tmp_path) -> None:
    cfg = TrainConfig.from_dict({**SMALL, "epochs": 3})
    straight = _strip(run_trial(cfg))
    first = Trainer(cfg)
    first.step()
    first.step()
    path = tmp_path / "ckpt.pt"
    torch.save(first.state_dict(), path)
    second = Trainer(cfg)
    second.load_state_dict(torch.load(path, weights_only=True))
    assert _strip([second.step()]) == straight[2:]


def test_ce_training_raises_mi_between_labels_and_predictions() -> None:
    # The paper's Fig. 3: minimizing CE alone raises I(Y;Ŷ) over the first epochs.
    cfg = TrainConfig.from_dict({**SMALL, "epochs": 4, "transition": {"family": "constant"}})
    mi = [r["mi_y_yhat"] for r in run_trial(cfg)]
    assert mi[-1] > mi[0] + 0.3
    assert mi[0] < mi[1]


def test_loss_is_f_ce_minus_weighted_mi() -> None:
    # One step by hand against the trainer's step: same parameters afterwards.
    cfg = TrainConfig.from_dict({**SMALL, "epochs": 2, "train_size": 100, "batch_size": 100,
                                 "transition": {"family": "constant", "c": 0.25},
                                 "kernel": {"yhat": "fixed", "sigma_yhat": 0.4,
                                            "x": "fixed", "sigma_x": 5.0}})
    tr = Trainer(cfg)
    ref = build_model("shallow")
    ref.load_state_dict(tr.model.state_dict())
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(cfg.seed))
    x, y = tr.data.train_x[perm], tr.data.train_y[perm]
    logits = ref(x)
    # The Gram matrix in float64, as the estimator defines it (a float32 Gram moves I by
    # ~1e-5 bits at alpha = 1.01: the small eigenvalues carry the 1/(1 - alpha) factor).
    mi = label_mutual_information(y, gram_matrix(logits.softmax(1).double(), 0.4), cfg.alpha)
    loss = 0.25 * torch.nn.functional.cross_entropy(logits, y) - 0.75 * mi
    opt.zero_grad()
    loss.backward()
    opt.step()
    train_loss = tr.train_epoch()
    assert train_loss == pytest.approx(float(loss.detach()), rel=1e-5)
    for p, q in zip(ref.parameters(), tr.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_dense_and_fast_estimators_train_alike() -> None:
    base = {**SMALL, "epochs": 2, "train_size": 300, "batch_size": 100}
    fast = run_trial(TrainConfig.from_dict(base))
    dense = run_trial(TrainConfig.from_dict({**base, "estimator": "dense"}))
    # Epoch 0 trains on CE alone: the same network, measured by two estimators.
    assert fast[0]["mi_y_yhat"] == pytest.approx(dense[0]["mi_y_yhat"], abs=1e-5)
    assert fast[0]["train_ce"] == dense[0]["train_ce"]
    # Epoch 1 uses I(Y;Ŷ) in the loss; float32 round-off differs, training stays alike.
    assert fast[1]["mi_y_yhat"] == pytest.approx(dense[1]["mi_y_yhat"], abs=1e-2)
    assert fast[1]["train_ce"] == pytest.approx(dense[1]["train_ce"], abs=1e-2)
