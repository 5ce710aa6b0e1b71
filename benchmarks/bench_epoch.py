"""Regularized vs CE-only epochs of the shallow CNN through the real loop (``Trainer.step``,
the code ``mistudy train``, the Tune trainable and ``reproduce`` all run).

Two trainers with the defaults ``mistudy train`` uses (batch size aside): CE (``constant``)
and the paper's ``f = (1 + epoch)^-0.5``. Their epochs run **interleaved** (CE, reg, reg, CE,
...) so the machine's drift touches both alike, and **sequentially** (all CE epochs, then all
regularized ones -- how two ``mistudy train`` runs one after the other compare). Each epoch's
``epoch_seconds`` is the record's own (what ``mistudy train`` prints); the training pass and the
kernel-width update are timed by wrapping the trainer's own methods (same code path).
Epoch 0 is CE for every family, so ratios are over epochs >= 1 and, separately, over all.

Per batch size, the regularized trainer runs at each order of ``ALPHAS``: 1.01 (the paper's;
eigensolves) and the integer orders 2 and 3, which the estimator computes by traces of matrix
powers without an eigensolve (``trainables.information.integer_order``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from trainables import TrainConfig, Trainer, load_splits

SCHEDULES = {"ce": {"family": "constant"}, "reg": {"family": "power", "exponent": 0.5}}
ALPHAS = (1.01, 2.0, 3.0)  # eigen path, trace path (no product), trace path (one product)


def _timed(tr: Trainer) -> dict[str, list[float]]:
    """Wrap the trainer's training pass and width update with timers (instance attributes:
    the loop still calls its own methods)."""
    times: dict[str, list[float]] = {"train": [], "widths": []}

    def wrap(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*a, **k)
            times[key].append(time.perf_counter() - t0)
            return out
        return timed

    tr.train_epoch = wrap(tr.train_epoch, "train")  # type: ignore[method-assign]
    tr.widths.update_yhat = wrap(tr.widths.update_yhat, "widths")  # type: ignore[method-assign]
    return times


def _pair(splits: Any, b: int, epochs: int, alpha: float) -> dict[str, tuple[Trainer, dict]]:
    out = {}
    for name, tr_spec in SCHEDULES.items():
        cfg = TrainConfig.from_dict({"dataset": "fashion_mnist", "batch_size": b,
                                     "epochs": epochs, "transition": tr_spec,
                                     "device": "cpu", "alpha": alpha})
        tr = Trainer(cfg, splits)
        out[name] = (tr, _timed(tr))
    return out


def _epochs(order: str, pair: dict, epochs: int) -> dict[str, list[float]]:
    secs: dict[str, list[float]] = {"ce": [], "reg": []}
    if order == "interleaved":
        for i in range(epochs):
            for name in (("ce", "reg") if i % 2 == 0 else ("reg", "ce")):
                secs[name].append(pair[name][0].step()["epoch_seconds"])
    else:
        for name in ("ce", "reg"):
            secs[name] = [pair[name][0].step()["epoch_seconds"] for _ in range(epochs)]
    return secs


def run(batch_sizes: tuple[int, ...], epochs: int, alphas: tuple[float, ...] = ALPHAS,
        orders: tuple[str, ...] = ("interleaved", "sequential")) -> list[dict[str, Any]]:
    splits = load_splits("fashion_mnist")
    rows = []
    for b in batch_sizes:
        for alpha in alphas:
            for order in orders:
                rows.append(_measure(splits, b, epochs, alpha, order))
    return rows


def _measure(splits: Any, b: int, epochs: int, alpha: float, order: str) -> dict[str, Any]:
    from trainables.names import integer_order

    pair = _pair(splits, b, epochs, alpha)
    secs = _epochs(order, pair, epochs)
    res: dict[str, Any] = {"batch": b, "alpha": alpha, "order": order, "epochs": epochs,
                           "path": "trace" if integer_order(alpha) else "eigen"}
    for name, (_, t) in pair.items():
        res[f"{name}_epoch_s"] = statistics.median(secs[name][1:])
        res[f"{name}_all_mean_s"] = statistics.mean(secs[name])
        res[f"{name}_train_s"] = statistics.median(t["train"][1:])
        res[f"{name}_widths_s"] = statistics.mean(t["widths"])
    res["ratio_epoch"] = res["reg_epoch_s"] / res["ce_epoch_s"]
    res["ratio_all_mean"] = res["reg_all_mean_s"] / res["ce_all_mean_s"]
    res["ratio_train"] = res["reg_train_s"] / res["ce_train_s"]
    return res
