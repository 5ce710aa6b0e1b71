"""I(Y;Ŷ) forward + backward per batch: the exact fast paths against the dense reference.

Reference: three dense float64 eigensolves with autograd (labels, predictions, joint) --
``trainables.information.mutual_information`` on ``gram_matrix``. Fast (the training
default): ``gaussian_label_mutual_information`` -- class counts for H(Y), one N×N eigensolve
for H(Ŷ), the C class blocks batched for the joint, and the gradient pulled back to the
softmax outputs from the same eigenvectors without an autograd graph over N×N matrices.
``label_given_gram``: ``label_mutual_information`` on a Gram built with autograd (the same
structure, but autograd for the kernel). Inputs are realistic: real Fashion-MNIST labels and
the softmax of a shallow CNN trained for one epoch, with the kernel width the trainer chose
by alignment. ``eigh_ms`` is one N×N float64 eigensolve with vectors, the floor of any exact
path that needs H(Ŷ)'s gradient; ``reference_ms / eigh_ms`` bounds what one such solve allows.
"""

from __future__ import annotations

from typing import Any

import torch

from trainables import TrainConfig, Trainer
from trainables.information import (
    gaussian_label_mutual_information,
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
    mi = fn(y, x, sigma, alpha)
    (g,) = torch.autograd.grad(mi, x)
    return float(mi.detach()), g


def reference(y: torch.Tensor, x: torch.Tensor, sigma: float, alpha: float) -> torch.Tensor:
    return mutual_information(label_matrix(y), gram_matrix(x, sigma), alpha)


def label_given_gram(y: torch.Tensor, x: torch.Tensor, sigma: float, alpha: float
                     ) -> torch.Tensor:
    return label_mutual_information(y, gram_matrix(x, sigma), alpha)


def fast_eigen(y: torch.Tensor, x: torch.Tensor, sigma: float, alpha: float) -> torch.Tensor:
    """The training default with its eigensolves forced (what an integer order skips)."""
    return gaussian_label_mutual_information(y, x, sigma, alpha, method="eigen")


PATHS = {"reference": reference, "fast": gaussian_label_mutual_information,
         "fast_eigen": fast_eigen, "label_given_gram": label_given_gram}


def run(sizes: tuple[int, ...], repeat: int, alpha: float = 1.01) -> list[dict[str, Any]]:
    y_all, p_all, sigma = realistic_inputs(max(sizes))
    rows = []
    for n in sizes:
        y, p = y_all[:n], p_all[:n].double()
        row: dict[str, Any] = {"N": n}
        v_ref, g_ref = _fwd_bwd(reference, y, p, sigma, alpha)
        for name, fn in PATHS.items():  # interleaved: each timed right after the others
            v, g = _fwd_bwd(fn, y, p, sigma, alpha)
            row[f"{name}_ms"] = 1e3 * median_time(
                lambda fn=fn, y=y, p=p: _fwd_bwd(fn, y, p, sigma, alpha), repeat)
            if name != "reference":
                row[f"{name}_abs_diff_bits"] = abs(v - v_ref)
                row[f"{name}_grad_rel_diff"] = float((g - g_ref).norm() / g_ref.norm())
        b = gram_matrix(p, sigma)
        row["eigh_ms"] = 1e3 * median_time(lambda b=b: torch.linalg.eigh(b), repeat)
        row["speedup"] = row["reference_ms"] / row["fast_ms"]
        row["eigen_over_fast"] = row["fast_eigen_ms"] / row["fast_ms"]  # > 1: the trace path
        row["reference_over_eigh"] = row["reference_ms"] / row["eigh_ms"]
        row.update({"mi_bits": v_ref, "sigma": sigma, "alpha": alpha})
        rows.append(row)
    return rows
