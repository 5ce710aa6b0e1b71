"""I(Y;Ŷ) forward + backward per batch: the exact fast path against the dense reference.

Reference: three dense float64 eigensolves with autograd (labels, predictions, joint) --
``trainables.information.mutual_information``. Fast: ``label_mutual_information`` (class
counts for H(Y), one N×N eigensolve for H(Ŷ), C block eigensolves for the joint). Inputs are
realistic: real Fashion-MNIST labels and the softmax of a shallow CNN trained for one epoch,
with the kernel width the trainer chose by alignment.
"""

from __future__ import annotations

from typing import Any

import torch

from trainables import TrainConfig, Trainer
from trainables.information import (
    gram_matrix,
    label_matrix,
    label_mutual_information,
    mutual_information,
)

from ._common import median_time


def realistic_inputs(n_max: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    cfg = TrainConfig.from_dict({"dataset": "fashion_mnist", "epochs": 1, "device": "cpu",
                                 "kernel": {"calibration_batches": 2}})
    tr = Trainer(cfg)
    tr.step()
    with torch.no_grad():
        tr.model.eval()
        probs = tr.model(tr.data.train_x[:n_max]).softmax(1)
    return tr.data.train_y[:n_max], probs, tr.sigma_yhat


def _fwd_bwd(fn: Any, y: torch.Tensor, p: torch.Tensor, sigma: float, alpha: float
             ) -> tuple[float, torch.Tensor]:
    x = p.clone().requires_grad_(True)
    mi = fn(y, gram_matrix(x, sigma), alpha)
    (g,) = torch.autograd.grad(mi, x)
    return float(mi.detach()), g


def reference(y: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    return mutual_information(label_matrix(y), b, alpha)


def run(sizes: tuple[int, ...], repeat: int, alpha: float = 1.01) -> list[dict[str, Any]]:
    y_all, p_all, sigma = realistic_inputs(max(sizes))
    rows = []
    for n in sizes:
        y, p = y_all[:n], p_all[:n].double()
        v_ref, g_ref = _fwd_bwd(reference, y, p, sigma, alpha)
        v_fast, g_fast = _fwd_bwd(label_mutual_information, y, p, sigma, alpha)
        t_ref = median_time(lambda y=y, p=p: _fwd_bwd(reference, y, p, sigma, alpha), repeat)
        t_fast = median_time(
            lambda y=y, p=p: _fwd_bwd(label_mutual_information, y, p, sigma, alpha), repeat)
        rel = float((g_fast - g_ref).norm() / g_ref.norm())
        rows.append({"N": n, "reference_ms": 1e3 * t_ref, "fast_ms": 1e3 * t_fast,
                     "speedup": t_ref / t_fast, "mi_bits": v_ref,
                     "abs_diff_bits": abs(v_fast - v_ref), "grad_rel_diff": rel,
                     "sigma": sigma, "alpha": alpha})
    return rows
