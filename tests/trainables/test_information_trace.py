"""The eigensolver-free path for integer orders (issue 30): ``sum lambda^n = tr(A^n)``.
Checked against an independent numpy computation, against the eigen path (values and
gradients), by gradcheck, and on which orders take it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import trainables.information as info
from trainables.information import (
    gaussian_label_mutual_information,
    gram_matrix,
    joint_entropy,
    label_matrix,
    label_mutual_information,
    mutual_information,
    renyi_entropy,
)
from trainables.names import integer_order

ORDERS = [2, 3, 4]


def _np_entropy(a: np.ndarray, alpha: float) -> float:
    lam = np.clip(np.linalg.eigvalsh(a), 0, None)
    return float(np.log2((lam**alpha).sum()) / (1 - alpha))


def _np_gram(x: np.ndarray, sigma: float) -> np.ndarray:
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / sigma**2)
    return k / len(x)  # unit diagonal / N: unit trace


def _np_mi(y: np.ndarray, x: np.ndarray, sigma: float, alpha: float) -> float:
    b = _np_gram(x, sigma)
    a = (y[:, None] == y[None, :]).astype(float) / len(y)
    ab = a * b
    return _np_entropy(a, alpha) + _np_entropy(b, alpha) - _np_entropy(ab / np.trace(ab), alpha)


@pytest.mark.parametrize("alpha", ORDERS)
@pytest.mark.parametrize("n", [20, 96])
def test_trace_path_matches_numpy_and_the_eigen_path(alpha: int, n: int) -> None:
    rng = np.random.default_rng(n + alpha)
    x = rng.normal(size=(n, 10))
    y = rng.integers(0, 5, size=n)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    truth = _np_mi(y, x, 3.0, alpha)
    b, a = gram_matrix(xt, 3.0), label_matrix(yt)
    assert float(renyi_entropy(b, alpha)) == pytest.approx(
        _np_entropy(_np_gram(x, 3.0), alpha), abs=1e-10)
    assert float(joint_entropy(a, b, alpha)) == pytest.approx(
        float(joint_entropy(a, b, alpha, method="eigen")), abs=1e-10)
    for value in (mutual_information(a, b, alpha), label_mutual_information(yt, b, alpha),
                  gaussian_label_mutual_information(yt, xt, 3.0, alpha),
                  gaussian_label_mutual_information(yt, xt, 3.0, float(alpha))):
        assert float(value) == pytest.approx(truth, abs=1e-10)
    assert float(gaussian_label_mutual_information(yt, xt, 3.0, alpha, method="eigen")) == \
        pytest.approx(truth, abs=1e-10)


@pytest.mark.parametrize("alpha", ORDERS)
def test_trace_gradient_matches_the_eigen_gradient(alpha: int) -> None:
    torch.manual_seed(alpha)
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (64,))
    grads = []
    for method in ("trace", "eigen"):
        xr = x.clone().requires_grad_(True)
        gaussian_label_mutual_information(y, xr, 2.5, alpha, method=method).backward()
        grads.append(xr.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-8, atol=1e-12)
    b = gram_matrix(x, 2.5).requires_grad_(True)
    label_mutual_information(y, b, alpha).backward()
    b2 = gram_matrix(x, 2.5).requires_grad_(True)
    label_mutual_information(y, b2, alpha, method="eigen").backward()
    assert torch.allclose(b.grad, b2.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("alpha", ORDERS)
def test_gradcheck_of_the_trace_path(alpha: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2] * 4)
    assert torch.autograd.gradcheck(
        lambda t: gaussian_label_mutual_information(y, t, 1.5, alpha, method="trace"), (x,))


def test_which_orders_take_the_trace_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert integer_order(2.0) == 2 and integer_order(3) == 3
    assert integer_order(2.5) is None and integer_order(1.0) is None
    assert integer_order(1.01) is None and integer_order(9) is None  # above MAX_TRACE_ORDER
    assert integer_order(2, "eigen") is None
    with pytest.raises(ValueError, match="alpha=2.5"):
        integer_order(2.5, "trace")
    calls: list[int] = []
    real = info.power_trace
    monkeypatch.setattr(info, "power_trace", lambda a, n: calls.append(n) or real(a, n))
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.arange(30) % 3
    gaussian_label_mutual_information(y, x, 2.0, 2.979)
    label_mutual_information(y, gram_matrix(x, 2.0), 1.01)
    assert calls == []  # non-integer orders never take it
    gaussian_label_mutual_information(y, x, 2.0, 2.0)
    assert calls == [2, 2]  # tr(B^2) and the joint's


def test_the_trace_path_runs_no_eigensolve(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("an eigensolve on the trace path")

    x = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    y = torch.arange(40) % 4
    expected = [float(gaussian_label_mutual_information(y, x, 2.0, a, method="eigen"))
                for a in ORDERS]
    monkeypatch.setattr(torch.linalg, "eigh", refuse)
    monkeypatch.setattr(torch.linalg, "eigvalsh", refuse)
    for alpha, value in zip(ORDERS, expected, strict=True):  # with and without a gradient
        out = gaussian_label_mutual_information(y, x, 2.0, alpha)
        out.backward()
        assert float(out) == pytest.approx(value, abs=1e-12)
        with torch.no_grad():
            assert float(gaussian_label_mutual_information(y, x, 2.0, alpha)) == \
                pytest.approx(value, abs=1e-12)
