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

from trainables import TrainConfig, Trainer, load_splits


def _epoch(tr: Trainer) -> tuple[float, float]:
    t0 = time.perf_counter()
    loss = tr.train_epoch()
    t1 = time.perf_counter()
    tr.evaluate(loss)
    tr.epoch += 1
    return t1 - t0, time.perf_counter() - t0


def _trainer(splits: Any, b: int, epochs: int, estimator: str, transition: dict) -> Trainer:
    cfg = TrainConfig.from_dict({"dataset": "fashion_mnist", "batch_size": b,
                                 "epochs": epochs + 1, "transition": transition,
                                 "device": "cpu", "estimator": estimator,
                                 "kernel": {"horizon": 1}})
    tr = Trainer(cfg, splits)
    tr.epoch = 1  # skip the CE-only epoch 0 of every schedule
    _ = tr.sigma_yhat  # the one-off width calibration is setup, not an epoch's cost
    return tr


def run(batch_sizes: tuple[int, ...], epochs: int, estimator: str = "fast"
        ) -> list[dict[str, Any]]:
    """Epochs interleaved (CE, reg, reg, CE, ...) so that drift in the machine's speed
    touches both sides alike; medians over ``epochs`` each."""
    splits = load_splits("fashion_mnist")
    rows = []
    for b in batch_sizes:
        trainers = {"ce": _trainer(splits, b, epochs, estimator, {"family": "constant"}),
                    "reg": _trainer(splits, b, epochs, estimator,
                                    {"family": "power", "exponent": 0.5})}
        times: dict[str, list[tuple[float, float]]] = {"ce": [], "reg": []}
        for i in range(epochs):
            for name in (("ce", "reg") if i % 2 == 0 else ("reg", "ce")):
                times[name].append(_epoch(trainers[name]))
        res: dict[str, Any] = {"batch": b, "estimator": estimator, "epochs": epochs}
        for name, t in times.items():
            res[f"{name}_train_s"] = statistics.median(x for x, _ in t)
            res[f"{name}_epoch_s"] = statistics.median(w for _, w in t)
        res["ratio_train"] = res["reg_train_s"] / res["ce_train_s"]
        res["ratio_epoch"] = res["reg_epoch_s"] / res["ce_epoch_s"]
        rows.append(res)
    return rows
