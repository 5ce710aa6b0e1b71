"""Regularized vs CE-only epochs of the shallow CNN, side by side in one process.

Both trainers see the same data and the same initial model. The regularized one trains with
``f = (1 + epoch)^-0.5`` from epoch 1 on (epoch 0 is CE-only for every family), so the
estimator runs on every batch. Reported: the training pass alone, and the whole epoch (training
pass + evaluation with its MI measurements, the same code for both).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from trainables import TrainConfig, Trainer, load_splits


def _epochs(tr: Trainer, n: int) -> tuple[list[float], list[float]]:
    train, whole = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = tr.train_epoch()
        t1 = time.perf_counter()
        tr.evaluate(loss)
        tr.epoch += 1
        train.append(t1 - t0)
        whole.append(time.perf_counter() - t0)
    return train, whole


def run(batch_sizes: tuple[int, ...], epochs: int, estimator: str = "fast"
        ) -> list[dict[str, Any]]:
    splits = load_splits("fashion_mnist")
    rows = []
    for b in batch_sizes:
        res: dict[str, Any] = {"batch": b, "estimator": estimator}
        for name, tr_spec in (("ce", {"family": "constant"}),
                              ("reg", {"family": "power", "exponent": 0.5})):
            cfg = TrainConfig.from_dict({"dataset": "fashion_mnist", "batch_size": b,
                                         "epochs": epochs + 1, "transition": tr_spec,
                                         "device": "cpu", "estimator": estimator,
                                         "kernel": {"horizon": 1}})
            tr = Trainer(cfg, splits)
            tr.epoch = 1  # skip the CE-only epoch 0 of every schedule
            _ = tr.sigma_yhat  # the one-off width calibration is setup, not an epoch's cost
            train, whole = _epochs(tr, epochs)
            res[f"{name}_train_s"] = statistics.median(train)
            res[f"{name}_epoch_s"] = statistics.median(whole)
        res["ratio_train"] = res["reg_train_s"] / res["ce_train_s"]
        res["ratio_epoch"] = res["reg_epoch_s"] / res["ce_epoch_s"]
        rows.append(res)
    torch.set_num_threads(torch.get_num_threads())
    return rows
