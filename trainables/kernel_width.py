"""Kernel-width strategies for the Gaussian Gram matrices of a layer (``X``, ``Ŷ``).

``alignment`` -- the paper's Fig. 1. Candidates: 100 equidistant widths on
``(diam / 100, diam]``, where ``diam`` is the diameter of the layer's space: ``sqrt(2)`` for
softmax outputs (the simplex's diameter), and the largest pairwise distance in the calibration
batches for inputs and logits. **The paper does not state its interval; this is our rule.**
Per epoch, the batch-mean alignment between the label matrix and the layer's kernel at every
candidate; its argmax is that epoch's maximizer; ``s*`` is the mean of those maximizers over a
calibration horizon (``kernel.horizon`` epochs), then frozen. The paper leaves open whether
``s*`` is fixed before training or updated: we update it online during the horizon (epoch
``e`` trains with the mean of the maximizers of epochs ``< e``; epoch 0 uses the maximizer of
the untrained network) and freeze it after. Inputs ``X`` do not change, so ``s*_X`` is the
maximizer of the mean alignment over calibration batches, computed once.

``silverman`` -- Silverman's rule as used by Yu & Principe (2019): ``s = gamma N^(-1/(4+d))``.
Their ``gamma`` is an empirical scale; we set it to the median pairwise distance of the batch
(``kernel.gamma`` overrides it), which keeps the rule scale-aware for raw pixels and softmax.

``fixed`` -- a width given in the config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from .information import pairwise_sq_dists

if TYPE_CHECKING:
    from .config import KernelConfig

__all__ = ["AlignmentCurve", "candidate_widths", "alignment_curve", "silverman_width",
           "layer_diameter", "KernelWidths"]

NUM_CANDIDATES = 100  # the paper's Fig. 1


class AlignmentCurve(NamedTuple):
    widths: Tensor  # (S,) candidate kernel widths
    alignment: Tensor  # (S,) batch-mean kernel-target alignment at each width

    @property
    def best(self) -> float:
        return float(self.widths[int(torch.argmax(self.alignment))])


def layer_diameter(batches: list[Tensor], softmax: bool) -> float:
    """Diameter of the layer's space: ``sqrt(2)`` on the simplex, else the largest pairwise
    distance seen in ``batches``."""
    if softmax:
        return math.sqrt(2.0)
    return max(float(pairwise_sq_dists(b.double()).max().sqrt()) for b in batches)


def candidate_widths(diameter: float, num: int = NUM_CANDIDATES) -> Tensor:
    """``num`` equidistant widths on ``(diameter / num, diameter]``."""
    return torch.linspace(diameter / num, diameter, num, dtype=torch.float64)


def alignment_curve(batches: list[tuple[Tensor, Tensor]], widths: Tensor) -> AlignmentCurve:
    """Batch-mean alignment between the label matrix and the layer's Gaussian kernel at every
    candidate width. ``batches`` holds ``(features, labels)`` pairs."""
    total = torch.zeros_like(widths)
    for feats, y in batches:
        total += _pair_alignment(pairwise_sq_dists(feats.double()), y, widths).cpu()
    return AlignmentCurve(widths, total / len(batches))


def _pair_alignment(d2: Tensor, y: Tensor, widths: Tensor) -> Tensor:
    """``kernel_alignment(exp(-d2 / w^2), [y_i == y_j])`` for every width ``w`` from the
    pairs ``i < j`` alone: both matrices are symmetric with unit diagonal, so
    ``<K, L> = N + 2 sum_{i<j} K_ij L_ij`` and ``||K||^2 = N + 2 sum_{i<j} K_ij^2`` -- half
    the exponentials of the full ``(S, N, N)`` stack, and a sixth of its memory."""
    n = d2.shape[0]
    iu = torch.triu_indices(n, n, 1, device=d2.device)
    d = d2[iu[0], iu[1]]  # (P,) pair distances
    same = (y[iu[0]] == y[iu[1]]).to(d2.dtype)  # (P,)
    e = torch.exp(-d[None, :] / widths.to(d2.device)[:, None] ** 2)  # (S, P)
    kl = n + 2.0 * (e @ same)
    kk = n + 2.0 * (e * e).sum(dim=1)
    ll = n + 2.0 * same.sum()
    return kl / torch.sqrt(kk * ll)


def silverman_width(feats: Tensor, gamma: float | None = None) -> float:
    """Silverman's rule ``gamma N^(-1/(4+d))``; ``gamma`` defaults to the median distance."""
    x = feats.reshape(feats.shape[0], -1).double()
    n, d = x.shape
    if gamma is None:
        d2 = pairwise_sq_dists(x)
        off = d2[~torch.eye(n, dtype=torch.bool, device=d2.device)]
        gamma = float(off.sqrt().median()) if off.numel() else 1.0
        gamma = gamma if gamma > 0 else 1.0
    return float(gamma) * n ** (-1.0 / (4 + d))


Batches = list[tuple[Tensor, Tensor]]  # (features, labels) per calibration batch


class KernelWidths:
    """The kernel widths of one trial, as their own small object.

    ``x``: σ_X, calibrated once from the inputs (which never change). ``yhat``: σ_Ŷ -- for
    epoch 0 the untrained network's alignment maximizer (computed when first needed); after
    every epoch :meth:`update_yhat` appends that epoch's maximizer while the horizon lasts and
    sets σ_Ŷ to their mean (the online ``s*``); then it is frozen. Batches come as callables so
    a frozen or fixed width costs no forward pass. Serialized with the trainer's checkpoint.
    """

    def __init__(self, kernel: KernelConfig, softmax: bool) -> None:
        self.kernel, self.softmax = kernel, softmax
        self.x: float | None = None
        self.yhat: float | None = None
        self.maxima: list[float] = []  # per-epoch alignment maximizers of Ŷ

    def curve(self, batches: Batches) -> AlignmentCurve:
        """Alignment of Ŷ's kernel with the labels at every candidate width (Fig. 1)."""
        diam = layer_diameter([f for f, _ in batches], softmax=self.softmax)
        return alignment_curve(batches, candidate_widths(diam))

    def calibrate_x(self, batches: Batches) -> float:
        k = self.kernel
        if k.x == "fixed":
            return float(k.sigma_x)  # type: ignore[arg-type]
        if k.x == "silverman":
            return silverman_width(batches[0][0], k.gamma)
        widths = candidate_widths(layer_diameter([x for x, _ in batches], softmax=False))
        return alignment_curve(batches, widths).best

    def start_yhat(self, batches: Callable[[], Batches]) -> float:
        """σ_Ŷ for the epoch about to be trained (computed once, before epoch 0)."""
        if self.yhat is None:
            k = self.kernel
            if k.yhat == "fixed":
                self.yhat = float(k.sigma_yhat)  # type: ignore[arg-type]
            elif k.yhat == "silverman":
                self.yhat = silverman_width(batches()[0][0], k.gamma)
            else:
                self.yhat = self.curve(batches()).best
        return self.yhat

    @property
    def frozen(self) -> bool:
        k = self.kernel
        return k.yhat == "fixed" or (k.yhat == "alignment" and len(self.maxima) >= k.horizon)

    def update_yhat(self, batches: Callable[[], Batches]) -> None:
        """After an epoch: the online ``s*`` during the horizon; Silverman re-measures."""
        if self.frozen:
            return
        if self.kernel.yhat == "alignment":
            self.maxima.append(self.curve(batches()).best)
            self.yhat = sum(self.maxima) / len(self.maxima)
        else:
            self.yhat = silverman_width(batches()[0][0], self.kernel.gamma)

    def state_dict(self) -> dict[str, Any]:
        return {"sigma_x": self.x, "sigma_yhat": self.yhat, "yhat_maxima": list(self.maxima)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.x = float(state["sigma_x"])
        self.yhat = None if state["sigma_yhat"] is None else float(state["sigma_yhat"])
        self.maxima = [float(v) for v in state["yhat_maxima"]]
