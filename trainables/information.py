"""Rényi's matrix-based α-entropy and mutual information (Sanchez Giraldo, Rao, Principe 2015).

Conventions follow Zaugg et al. (WIVACE 2024), Eq. 2-6. All entropies are in **bits**.

* Kernel: ``K_ij = exp(-||x_i - x_j||^2 / sigma^2)`` -- note ``sigma^2``, not ``2 sigma^2`` as in
  several public codes, so widths are not comparable across those conventions.
* Normalization: ``A_ij = K_ij / (N sqrt(K_ii K_jj))`` (unit trace). The paper's Eq. 3 prints
  ``A_ii`` in the denominator and omits ``1/N``; we use the standard definition.
* ``H_alpha(A) = 1/(1-alpha) log2 sum_i lambda_i^alpha``; ``alpha == 1`` is the von Neumann limit.
* Joint: ``H_alpha(A, B) = H_alpha(A o B / tr(A o B))``; ``I = H(A) + H(B) - H(A, B)``.

Two ways to get ``I(Y; B)`` for a label matrix ``Y``:

* :func:`mutual_information` -- the dense reference: three ``N x N`` eigensolves.
* :func:`label_mutual_information` -- exact and faster: the label matrix's spectrum is
  ``{n_c / N}`` (class counts), and ``Y o B`` is block-diagonal by class, so the joint needs
  only ``C`` small eigensolves of size ``n_c``. Agrees with the reference to round-off.

Eigensolves run in float64 by default (``dtype=``); eigenvalues below the numerical-rank
threshold ``N * eps * lambda_max`` count as exact zeros, so gradients stay finite for any
``alpha > 0`` (``d lambda^alpha / d lambda`` blows up at 0 for ``alpha < 1``).

**Integer orders need no eigensolve.** For ``alpha = n``, an integer >= 2 (``2.0`` counts),
``sum_i lambda_i^n = tr(A^n) = <A^p, A^q>_F`` with ``p = n // 2``, ``q = n - p`` (``A``
symmetric): ``n = 2`` is ``||A||_F^2`` (no product), ``n = 3`` one matrix product, ``n = 4``
one. Every function here takes that **trace path** automatically for such orders
(``method="auto"``); ``method="eigen"`` forces the eigensolves, ``method="trace"`` refuses a
non-integer order. The gradient is autograd through the same products (``d tr(A^n)/dA =
n A^(n-1)``). With the label structure the joint is a sum over the class blocks:
``tr((Y o B)^n) = sum_c tr(B_c^n) / N^n`` for the unit-trace ``B``. Exact to round-off against
the eigen path (tests/trainables/test_information_trace.py). Still float64: the products are
cheap enough that precision is not worth trading here (docs/performance.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .names import integer_order

__all__ = ["pairwise_sq_dists", "gram_matrix", "label_matrix", "label_gram_matrix",
           "renyi_entropy", "entropy_from_eigenvalues", "joint_entropy", "mutual_information",
           "label_entropy", "label_mutual_information", "gaussian_label_mutual_information",
           "kernel_alignment", "power_trace"]




def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def pairwise_sq_dists(x: Tensor) -> Tensor:
    """Squared Euclidean distances between the rows of ``x`` flattened to ``(N, d)``."""
    x = _flat(x)
    sq = (x * x).sum(dim=1)  # (N,)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)  # (N, N)
    # Round-off can make the Gram trick slightly negative; the diagonal is exactly zero.
    d2 = d2.clamp_min(0.0)
    return d2 - torch.diag_embed(torch.diagonal(d2))


def _normalize(k: Tensor) -> Tensor:
    """``A_ij = K_ij / (N sqrt(K_ii K_jj))`` -- unit trace."""
    d = torch.diagonal(k).clamp_min(torch.finfo(k.dtype).tiny).sqrt()  # (N,)
    return k / (d[:, None] * d[None, :]) / k.shape[0]


def gram_matrix(x: Tensor, sigma: float | Tensor) -> Tensor:
    """Normalized Gaussian Gram matrix ``(N, N)`` of the rows of ``x`` (trace 1)."""
    if float(sigma) <= 0:
        raise ValueError(f"kernel width sigma={float(sigma)!r} must be > 0")
    k = torch.exp(-pairwise_sq_dists(x) / (sigma * sigma))
    return _normalize(k)


def label_matrix(
    y: Tensor, num_classes: int | None = None, *, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Normalized same-label matrix ``[y_i == y_j] / N`` (the sigma -> 0 limit of a Gaussian
    kernel on one-hot labels), in the estimator's working precision ``dtype``.
    ``num_classes``, when given, is checked against the labels."""
    y = y.reshape(-1)
    if num_classes is not None and y.numel() and int(y.max()) >= num_classes:
        raise ValueError(f"label {int(y.max())} out of range for num_classes={num_classes}")
    same = (y[:, None] == y[None, :]).to(dtype)
    return same / y.numel()


def label_gram_matrix(y: Tensor, num_classes: int, sigma: float) -> Tensor:
    """Gaussian kernel on one-hot labels with its own width (an alternative to
    :func:`label_matrix`): same-label entries 1, others ``exp(-2 / sigma^2)``."""
    onehot = torch.nn.functional.one_hot(y.reshape(-1).long(), num_classes)
    return gram_matrix(onehot.to(torch.float64), sigma)


def _check_alpha(alpha: float) -> None:
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha={alpha!r} is not allowed: the Rényi order must be a finite > 0")


def power_trace(a: Tensor, n: int) -> Tensor:
    """``tr(A^n)`` of symmetric matrices (last two dims, batched) without an eigensolve:
    ``<A^p, A^q>_F`` with ``p = n // 2``, ``q = n - p`` (``n - 2`` products at most, one for
    n = 3 and 4)."""
    p = n // 2
    ap = a
    for _ in range(p - 1):
        ap = ap @ a  # (..., N, N)
    aq = ap if n - p == p else ap @ a
    return (ap * aq).sum(dim=(-2, -1))


def _trace_entropy(power_sum: Tensor, alpha: float) -> Tensor:
    """Rényi entropy (bits) from ``sum lambda^alpha`` of a unit-trace spectrum."""
    return torch.log2(power_sum) / (1.0 - alpha)


def entropy_from_eigenvalues(lam: Tensor, alpha: float) -> Tensor:
    """Rényi entropy (bits) of a unit-trace spectrum ``lam`` (last dim), round-off clamped.

    Eigenvalues below ``n * eps * max(lam)`` are treated as exact zeros (value and gradient).
    """
    _check_alpha(alpha)
    return _entropy_and_slope(lam, alpha)[0]


def renyi_entropy(a: Tensor, alpha: float, *, dtype: torch.dtype = torch.float64,
                  method: str = "auto") -> Tensor:
    """``H_alpha(A)`` in bits for a unit-trace PSD matrix ``A`` (one eigensolve in ``dtype``,
    or for an integer order ``tr(A^alpha)`` by products: :func:`integer_order`)."""
    _check_alpha(alpha)
    n = integer_order(alpha, method)
    if n is not None:
        return _trace_entropy(power_trace(a.to(dtype), n), alpha).to(a.dtype)
    lam = torch.linalg.eigvalsh(a.to(dtype))
    return entropy_from_eigenvalues(lam, alpha).to(a.dtype)


def joint_entropy(
    a: Tensor, b: Tensor, alpha: float, *, dtype: torch.dtype = torch.float64,
    method: str = "auto"
) -> Tensor:
    """``H_alpha(A, B) = H_alpha(A o B / tr(A o B))``."""
    ab = a * b
    return renyi_entropy(ab / torch.trace(ab), alpha, dtype=dtype, method=method)


def mutual_information(
    a: Tensor, b: Tensor, alpha: float, *, dtype: torch.dtype = torch.float64,
    method: str = "auto"
) -> Tensor:
    """Dense reference ``I_alpha(A; B) = H(A) + H(B) - H(A, B)`` (three eigensolves, or three
    traces of powers for an integer order)."""
    return (
        renyi_entropy(a, alpha, dtype=dtype, method=method)
        + renyi_entropy(b, alpha, dtype=dtype, method=method)
        - joint_entropy(a, b, alpha, dtype=dtype, method=method)
    )


def label_entropy(y: Tensor, alpha: float) -> Tensor:
    """``H_alpha`` of :func:`label_matrix` from the class counts alone (no eigensolve):
    its spectrum is ``{n_c / N}`` plus zeros."""
    counts = torch.bincount(y.reshape(-1).long()).to(torch.float64)
    return entropy_from_eigenvalues(counts / counts.sum(), alpha)


def _entropy_and_slope(lam: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Rényi entropy (bits) of unit-trace spectra (last dim) and its derivative per
    eigenvalue, ``dH/dlambda_i`` (0 for eigenvalues below the numerical-rank threshold)."""
    lam = lam.clamp_min(0.0)
    tol = lam.shape[-1] * torch.finfo(lam.dtype).eps * lam.detach().amax(dim=-1, keepdim=True)
    live = lam > tol
    safe = torch.where(live, lam, torch.ones_like(lam))
    zero = torch.zeros_like(lam)
    if alpha == 1.0:
        h = -torch.where(live, safe * torch.log2(safe), zero).sum(dim=-1)
        return h, torch.where(live, -(torch.log2(safe) + 1.0 / math.log(2.0)), zero)
    total = torch.where(live, safe**alpha, zero).sum(dim=-1, keepdim=True)
    h = torch.log2(total.squeeze(-1)) / (1.0 - alpha)
    slope = alpha * torch.where(live, safe ** (alpha - 1.0), zero)
    return h, slope / ((1.0 - alpha) * total * math.log(2.0))


class _ClassBlocks:
    """A batch sorted by label: the permutation, and the class blocks as a zero-padded
    ``(C, m, m)`` stack (``m`` the largest class) gathered in two indexing operations."""

    def __init__(self, y: Tensor) -> None:
        y = y.reshape(-1)
        self.order = torch.argsort(y, stable=True)
        counts = torch.bincount(y)
        self.sizes = counts[counts > 0]  # (C,) classes present
        starts = torch.cumsum(self.sizes, 0) - self.sizes
        m = int(self.sizes.max())  # note: one host sync per batch (device -> host)
        ar = torch.arange(m, device=y.device)
        self.mask = ar[None, :] < self.sizes[:, None]  # (C, m) real rows
        self.index = torch.minimum(starts[:, None] + ar[None, :], torch.tensor(len(y) - 1))

    def square(self, k: Tensor) -> Tensor:
        """``(C, m, m)``: the diagonal blocks of the sorted ``k``, zero outside each class."""
        i = self.index
        both = self.mask[:, :, None] & self.mask[:, None, :]
        return k[i[:, :, None], i[:, None, :]] * both

    def rows(self, x: Tensor) -> Tensor:
        """``(C, m, d)``: the sorted rows of ``x`` per class, zero-padded."""
        return x[self.index] * self.mask[:, :, None]

    def subtract_blocks(self, g: Tensor, gb: Tensor) -> None:
        """``g -= blockdiag(gb)`` in place, ``g`` sorted ``(N, N)``, ``gb`` from :meth:`square`."""
        both = self.mask[:, :, None] & self.mask[:, None, :]
        rows = self.index[:, :, None].expand_as(gb)[both]
        cols = self.index[:, None, :].expand_as(gb)[both]
        g.index_put_((rows, cols), -gb[both], accumulate=True)


def _label_spectra(blocks: _ClassBlocks, b: Tensor, alpha: float, vectors: bool
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """``I(Y; B)`` for ``b`` in the label-sorted order, and the spectra its gradient needs.

    ``H(Y)`` from the class counts; ``Y o B`` is block-diagonal by class with trace
    ``tr(B) / N``, so the joint spectrum is the union of the class blocks' spectra over
    ``tr(B)``: one ``N x N`` eigensolve for ``H(B)`` and the ``C`` blocks as one batch (zero
    padding adds exact zero eigenvalues)."""
    t = torch.trace(b)
    bb = blocks.square(b)
    if vectors:
        lam, v = torch.linalg.eigh(b)  # the one N x N eigensolve serves value and gradient
        mu, u = torch.linalg.eigh(bb)
    else:
        lam, mu = torch.linalg.eigvalsh(b), torch.linalg.eigvalsh(bb)
        v = u = lam.new_empty(0)
    h_b, w_b = _entropy_and_slope(lam, alpha)
    h_j, w_j = _entropy_and_slope(mu.reshape(-1) / t, alpha)
    h_y, _ = _entropy_and_slope(blocks.sizes.to(b.dtype) / b.shape[0], alpha)
    parts = {"b": b, "bb": bb, "t": t, "v": v, "w_b": w_b, "u": u, "mu": mu,
             "w_j": w_j.reshape(mu.shape)}
    return h_y + h_b - h_j, parts


def _grad_b(p: dict[str, Tensor]) -> Tensor:
    """``dH(B)/dB = V diag(dH/dlambda) V^T``: one ``N^3`` product."""
    return (p["v"] * p["w_b"]) @ p["v"].T


def _grad_joint_blocks(p: dict[str, Tensor]) -> Tensor:
    """``(C, m, m)``: the joint's gradient through each block's spectrum, ``nu = mu / tr(B)``."""
    return (p["u"] * (p["w_j"] / p["t"])[:, None, :]) @ p["u"].transpose(-1, -2)


class _LabelMI(torch.autograd.Function):
    """``I(Y;B)`` with the gradient from the forward's own eigenvectors (no second solve):
    ``dI/dB = dH(B)/dB - blockdiag(joint) + (sum w mu / tr(B)^2) I`` (the last through
    ``tr(B)``), assembled in the label-sorted order and permuted back."""

    @staticmethod
    def forward(ctx: object, y: Tensor, b: Tensor, alpha: float) -> Tensor:  # type: ignore
        blocks = _ClassBlocks(y)
        value, p = _label_spectra(blocks, b[blocks.order][:, blocks.order], alpha, True)
        g = _grad_b(p)
        g.diagonal().add_((p["w_j"] * p["mu"]).sum() / (p["t"] * p["t"]))
        blocks.subtract_blocks(g, _grad_joint_blocks(p))
        grad = torch.empty_like(g)
        grad[blocks.order[:, None], blocks.order[None, :]] = g
        ctx.save_for_backward(grad)  # type: ignore[attr-defined]
        return value

    @staticmethod
    def backward(ctx: object, g: Tensor) -> tuple[None, Tensor, None]:  # type: ignore
        (grad,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return None, g * grad, None


def _label_traces(y: Tensor, b: Tensor, alpha: float, n: int) -> Tensor:
    """``I(Y; B)`` by traces of powers (differentiable; no sorting, no host sync): ``tr(B^n)``,
    and for the joint ``tr((S o B)^n) / tr(B)^n`` with ``S`` the 0/1 same-label matrix (block-
    diagonal up to a permutation, so this is the sum over the class blocks); ``H(Y)`` from the
    class frequencies."""
    y = y.reshape(-1)
    same = (y[:, None] == y[None, :]).to(b.dtype)  # (N, N)
    t = torch.trace(b)
    h_b = _trace_entropy(power_trace(b, n), alpha)  # B taken as unit-trace, as the eigen path
    h_j = _trace_entropy(power_trace(same * b, n) / t**n, alpha)
    freq = same.sum(dim=1) / y.numel()  # n_c / N for each sample's class
    h_y = _trace_entropy((freq ** (n - 1)).sum() / y.numel(), alpha)  # sum_c (n_c/N)^n
    return h_y + h_b - h_j


def label_mutual_information(
    y: Tensor, b: Tensor, alpha: float, *, dtype: torch.dtype = torch.float64,
    method: str = "auto"
) -> Tensor:
    """Exact ``I_alpha(label_matrix(y); B)`` using the label matrix's structure.

    ``H(Y)`` comes from the class counts; ``Y o B`` is block-diagonal by class with trace
    ``tr(B) / N``, so the joint spectrum is the union of the class blocks' spectra divided by
    ``tr(B)``. One ``N x N`` eigensolve (for ``H(B)``) plus ``C`` of size ``n_c``; with
    gradients, the same eigenvectors give ``dI/dB`` analytically:
    ``dH/dB = V diag(dH/dlambda) V^T``, the joint's per block plus its ``tr(B)`` term.
    """
    _check_alpha(alpha)
    b64 = b.to(dtype)
    y = y.to(b.device)
    n = integer_order(alpha, method)
    if n is not None:  # no eigensolve: traces of powers, autograd for the gradient
        return _label_traces(y, b64, alpha, n).to(b.dtype)
    if torch.is_grad_enabled() and b64.requires_grad:
        out = _LabelMI.apply(y, b64, alpha)
    else:
        blocks = _ClassBlocks(y)
        b64 = b64.detach()
        out, _ = _label_spectra(blocks, b64[blocks.order][:, blocks.order], alpha, False)
    return out.to(b.dtype)


def _pull_back(g: Tensor, k: Tensor, x: Tensor) -> Tensor:
    """``sum_j S_ij (x_i - x_j)`` with ``S = G o K`` (batched): the chain rule from ``dI/dK``
    through ``K_ij = exp(-||x_i - x_j||^2 / sigma^2)``, up to the factor ``-2/sigma^2``."""
    s = g * k
    return s.sum(-1, keepdim=True) * x - s @ x


class _GaussianLabelMI(torch.autograd.Function):
    """``I(Y; gram_matrix(x))`` with its gradient in ``x`` from the forward's eigenvectors:
    ``dI/dB = V diag(dH/dlambda) V^T`` minus the joint's per-class blocks (the ``tr(B)`` term
    vanishes: ``tr(B) = 1`` for every ``x``), pulled back through the Gaussian kernel in
    ``O(N^2 d)`` -- no autograd graph over the ``N x N`` matrices."""

    @staticmethod
    def forward(ctx: object, y: Tensor, x: Tensor, sigma: float, alpha: float
                ) -> Tensor:  # type: ignore[override]
        blocks = _ClassBlocks(y)
        xs = x[blocks.order]
        value, p = _label_spectra(blocks, _unit_gaussian_gram(xs, sigma), alpha, True)
        ctx.parts, ctx.blocks, ctx.xs = p, blocks, xs  # type: ignore[attr-defined]
        ctx.sigma = sigma  # type: ignore[attr-defined]
        return value

    @staticmethod
    def backward(ctx: object, g: Tensor) -> tuple[None, Tensor, None, None]:  # type: ignore
        p, blocks, xs = ctx.parts, ctx.blocks, ctx.xs  # type: ignore[attr-defined]
        sigma = ctx.sigma  # type: ignore[attr-defined]
        grad = _pull_back(_grad_b(p), p["b"], xs)
        joint = _pull_back(_grad_joint_blocks(p), p["bb"], blocks.rows(xs))
        grad -= joint[blocks.mask]  # rows back in sorted order
        grad *= -4.0 / (sigma * sigma) * g  # B = K/n; (i,j) and (j,i); d exp = -2/sigma^2
        out = torch.empty_like(grad)
        out[blocks.order] = grad
        return None, out, None, None


def _matrix_power(a: Tensor, k: int) -> Tensor:
    """``A^k`` for ``k >= 1`` (``k - 1`` products)."""
    out = a
    for _ in range(k - 1):
        out = out @ a
    return out


class _GaussianLabelTrace(torch.autograd.Function):
    """``I(Y; gram_matrix(x))`` for an integer order ``n`` without an eigensolve, its gradient
    in closed form: with ``S`` the same-label mask and ``J = S o B``,
    ``dI/dB = n / ((1 - alpha) ln 2) (B^(n-1) / tr(B^n) - S o J^(n-1) / tr(J^n))`` (``tr(B) = 1``
    for every ``x``, so no trace term), pulled back through the Gaussian kernel like the eigen
    path's (``O(N^2 d)``; for n = 2 no matrix product at all)."""

    @staticmethod
    def forward(ctx: object, y: Tensor, x: Tensor, sigma: float, n: int,
                alpha: float) -> Tensor:  # type: ignore[override]
        b = _unit_gaussian_gram(x, sigma)  # (N, N), trace 1
        same = (y[:, None] == y[None, :]).to(b.dtype)  # (N, N)
        j = same * b
        pb, pj = _matrix_power(b, n - 1), _matrix_power(j, n - 1)
        s_b, s_j = (pb * b).sum(), (pj * j).sum()  # tr(B^n), tr(J^n): B, J symmetric
        freq = same.sum(dim=1) / y.numel()
        s_y = (freq ** (n - 1)).sum() / y.numel()  # sum_c (n_c / N)^n
        ctx.save_for_backward(x, b, same, pb, pj, s_b, s_j)  # type: ignore[attr-defined]
        ctx.sigma, ctx.n, ctx.alpha = sigma, n, alpha  # type: ignore[attr-defined]
        return (torch.log2(s_y) + torch.log2(s_b) - torch.log2(s_j)) / (1.0 - alpha)

    @staticmethod
    def backward(ctx: object, g: Tensor  # type: ignore[override]
                 ) -> tuple[None, Tensor, None, None, None]:
        x, b, same, pb, pj, s_b, s_j = ctx.saved_tensors  # type: ignore[attr-defined]
        sigma, n, alpha = ctx.sigma, ctx.n, ctx.alpha  # type: ignore[attr-defined]
        grad_b = (pb / s_b - same * pj / s_j) * (n / ((1.0 - alpha) * math.log(2.0)))
        grad = _pull_back(grad_b, b, x) * (-4.0 / (sigma * sigma) * g)
        return None, grad, None, None, None


def _unit_gaussian_gram(x: Tensor, sigma: float) -> Tensor:
    """``gram_matrix(x, sigma)`` for the Gaussian kernel, whose diagonal is 1: ``K / N``."""
    return torch.exp(-pairwise_sq_dists(x) / (sigma * sigma)) / x.shape[0]


def gaussian_label_mutual_information(
    y: Tensor, x: Tensor, sigma: float, alpha: float, method: str = "auto"
) -> Tensor:
    """``label_mutual_information(y, gram_matrix(x, sigma), alpha)`` fused: the Gram matrix
    is built in float64 inside, and the backward goes straight to ``x`` (``(N, d)``) without
    an autograd graph over ``N x N`` matrices. For an integer order, traces of powers of the
    class blocks and autograd (no eigensolve). The training loop's default estimator."""
    _check_alpha(alpha)
    if float(sigma) <= 0:
        raise ValueError(f"kernel width sigma={float(sigma)!r} must be > 0")
    x64 = _flat(x).to(torch.float64)
    y = y.to(x.device)
    n = integer_order(alpha, method)
    if n is not None and torch.is_grad_enabled() and x.requires_grad:
        return _GaussianLabelTrace.apply(y.reshape(-1), x64, float(sigma), n,
                                         alpha).to(x.dtype)
    if n is not None:
        return _label_traces(y, _unit_gaussian_gram(x64, float(sigma)), alpha, n).to(x.dtype)
    if torch.is_grad_enabled() and x.requires_grad:
        out = _GaussianLabelMI.apply(y, x64, float(sigma), alpha)
    else:
        blocks = _ClassBlocks(y)
        gram = _unit_gaussian_gram(x64.detach()[blocks.order], float(sigma))
        out, _ = _label_spectra(blocks, gram, alpha, False)
    return out.to(x.dtype)


def kernel_alignment(k: Tensor, l: Tensor) -> Tensor:  # noqa: E741 - Cristianini's notation
    """Kernel-target alignment (Cristianini et al. 2001): ``<K, L>_F / (||K||_F ||L||_F)``.

    Batched over leading dimensions of ``k`` (e.g. one kernel per candidate width).
    """
    num = (k * l).sum(dim=(-2, -1))
    den = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)
    return num / den
