"""Our estimator against representation-itl's (the reference implementation of matrix-based
Rényi's α-entropy, github.com/uk-cliplab/representation-itl), side by side in one run.

Its code is not part of this repository: point ``REPITL_SRC`` at a checkout's ``src/`` folder
(``git clone https://github.com/uk-cliplab/representation-itl``; without it this benchmark
says so and measures nothing). The same quantity both ways, ``I(Y;Ŷ)`` with its gradient in
the softmax outputs, float64, the same inputs as ``bench_estimator`` (real Fashion-MNIST labels,
a shallow CNN's softmax after one epoch, the width the trainer chose):

* ours: ``gaussian_label_mutual_information`` (the training default: α = 2 and 3 by traces of
  matrix powers with a closed-form gradient; α = 1.01 by eigensolves);
* representation-itl: ``matrixAlphaMutualInformation(Kx, Ky, alpha)`` on its own
  ``gaussianKernel`` (``exp(-d²/2s²)``: given ``s = σ/√2`` for our ``exp(-d²/σ²)``) and the 0/1
  same-label matrix, backward by autograd; it has a Frobenius shortcut for α = 2 and takes
  eigenvalues otherwise. Its entropies are in nats: converted to bits for the comparison.

    REPITL_SRC=/path/representation-itl/src python -m benchmarks.bench_repitl
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from trainables.information import gaussian_label_mutual_information

from ._common import median_time
from .bench_estimator import realistic_inputs


def _theirs(src: str) -> Any:
    sys.path.insert(0, src)
    from repitl import kernel_utils, matrix_itl  # type: ignore[import-not-found]

    def mi(y: torch.Tensor, p: torch.Tensor, sigma: float, alpha: float) -> torch.Tensor:
        kx = kernel_utils.gaussianKernel(p, p, sigma / math.sqrt(2.0))
        ky = (y[:, None] == y[None, :]).to(p.dtype)
        return matrix_itl.matrixAlphaMutualInformation(kx, ky, alpha) / math.log(2.0)

    return mi


def _fwd_bwd(fn: Any, y: torch.Tensor, p: torch.Tensor, sigma: float, alpha: float
             ) -> tuple[float, torch.Tensor]:
    x = p.clone().requires_grad_(True)
    v = fn(y, x, sigma, alpha)
    v.backward()
    return float(v.detach()), x.grad


def run(src: str, sizes: tuple[int, ...] = (256, 512), repeat: int = 5) -> list[dict[str, Any]]:
    theirs = _theirs(src)
    y_all, p_all, sigma = realistic_inputs(max(sizes))
    rows = []
    for n in sizes:
        y, p = y_all[:n], p_all[:n].double()
        for alpha in (1.01, 2.0, 3.0):
            row: dict[str, Any] = {"N": n, "alpha": alpha}
            for name, fn in (("ours", gaussian_label_mutual_information), ("repitl", theirs)):
                v, g = _fwd_bwd(fn, y, p, sigma, alpha)
                row[f"{name}_bits"], row[f"_{name}_grad"] = v, g
                row[f"{name}_ms"] = 1e3 * median_time(
                    lambda fn=fn, y=y, p=p, a=alpha: _fwd_bwd(fn, y, p, sigma, a), repeat)
            row["repitl_over_ours"] = row["repitl_ms"] / row["ours_ms"]
            row["abs_diff_bits"] = abs(row["ours_bits"] - row["repitl_bits"])
            g1, g2 = row.pop("_ours_grad"), row.pop("_repitl_grad")
            row["grad_rel_diff"] = float((g1 - g2).norm() / g2.norm())
            rows.append(row)
    return rows


def main() -> int:
    src = os.environ.get("REPITL_SRC")
    if not src or not (Path(src) / "repitl").is_dir():
        print("REPITL_SRC is not a representation-itl checkout's src/ folder: nothing measured")
        return 0
    from ._common import table, write

    rows = run(src)
    print(table(rows, ["N", "alpha", "ours_ms", "repitl_ms", "repitl_over_ours",
                       "abs_diff_bits", "grad_rel_diff"]))
    out = write("estimator-repitl", {"rows": rows, "goal": "ours >= 5x representation-itl "
                                                           "at N = 512, alpha 2"})
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
