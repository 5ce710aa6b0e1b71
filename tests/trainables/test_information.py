"""The estimator against independent truths: analytic entropies, invariants, a dense reference."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.information import (
    entropy_from_eigenvalues,
    gaussian_label_mutual_information,
    gram_matrix,
    joint_entropy,
    kernel_alignment,
    label_entropy,
    label_matrix,
    label_mutual_information,
    mutual_information,
    pairwise_sq_dists,
    renyi_entropy,
)

ALPHAS = [0.5, 1.0, 1.01, 2.0, 5.0]


def renyi_of_distribution(p: list[float], alpha: float) -> float:
    """Classical Rényi entropy (bits) of a probability vector, written out by hand."""
    p = [q for q in p if q > 0]
    if alpha == 1.0:
        return -sum(q * math.log2(q) for q in p)
    return math.log2(sum(q**alpha for q in p)) / (1 - alpha)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_far_apart_points_give_log2_n(alpha: float) -> None:
    n = 17
    x = 100.0 * torch.eye(n, dtype=torch.float64)  # pairwise distance 141, kernel ~ identity
    h = float(renyi_entropy(gram_matrix(x, 1.0), alpha))
    assert h == pytest.approx(math.log2(n), abs=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_all_equal_points_give_zero(alpha: float) -> None:
    x = torch.ones(12, 5, dtype=torch.float64)
    assert float(renyi_entropy(gram_matrix(x, 0.3), alpha)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("classes", [2, 3, 10])
def test_balanced_labels_give_log2_c(alpha: float, classes: int) -> None:
    y = torch.arange(classes * 7) % classes
    assert float(renyi_entropy(label_matrix(y, classes), alpha)) == pytest.approx(
        math.log2(classes), abs=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_diagonal_spectrum_matches_classical_renyi(alpha: float) -> None:
    p = [0.5, 0.25, 0.125, 0.0625, 0.0625]
    a = torch.diag(torch.tensor(p, dtype=torch.float64))
    assert float(renyi_entropy(a, alpha)) == pytest.approx(renyi_of_distribution(p, alpha),
                                                             abs=1e-12)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_label_entropy_from_counts_matches_hand_formula(alpha: float) -> None:
    y = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    want = renyi_of_distribution([0.5, 0.3, 0.2], alpha)
    assert float(label_entropy(y, alpha)) == pytest.approx(want, abs=1e-12)
    assert float(renyi_entropy(label_matrix(y), alpha)) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_self_information_of_a_label_matrix_is_its_entropy(alpha: float) -> None:
    # For 0/1 kernels A o A = A, so I(A;A) = H(A). (For Gaussian kernels A o A is the kernel
    # at width sigma/sqrt(2), so the identity does not hold there.)
    y = torch.tensor([0, 0, 1, 2, 2, 2, 3, 1, 0, 3])
    a = label_matrix(y).double()
    assert float(mutual_information(a, a, alpha)) == pytest.approx(float(renyi_entropy(a, alpha)),
                                                                    abs=1e-9)


def test_independent_labels_have_near_zero_information() -> None:
    g = torch.Generator().manual_seed(0)
    n = 2000
    y1 = torch.randint(0, 4, (n,), generator=g)
    y2 = torch.randint(0, 3, (n,), generator=g)
    a, b = label_matrix(y1).double(), label_matrix(y2).double()
    mi = float(label_mutual_information(y1, b, 1.01))
    assert abs(mi) < 0.01
    # A dependent pair, for contrast, carries about log2(3) bits.
    assert float(label_mutual_information(y1, a, 1.01)) == pytest.approx(2.0, abs=0.01)


def test_symmetry_and_permutation_invariance() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    z = x[:, :2] + 0.3 * torch.randn(40, 2, generator=g, dtype=torch.float64)
    a, b = gram_matrix(x, 2.0), gram_matrix(z, 1.0)
    i_ab = float(mutual_information(a, b, 1.01))
    assert i_ab == pytest.approx(float(mutual_information(b, a, 1.01)), abs=1e-10)
    perm = torch.randperm(40, generator=g)
    a_p, b_p = gram_matrix(x[perm], 2.0), gram_matrix(z[perm], 1.0)
    assert float(mutual_information(a_p, b_p, 1.01)) == pytest.approx(i_ab, abs=1e-10)


def test_alpha_to_one_is_continuous() -> None:
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = gram_matrix(x, 1.5)
    h1 = float(renyi_entropy(a, 1.0))
    for eps in (1e-3, 1e-5, 1e-7):
        assert float(renyi_entropy(a, 1.0 + eps)) == pytest.approx(h1, abs=10 * eps)
        assert float(renyi_entropy(a, 1.0 - eps)) == pytest.approx(h1, abs=10 * eps)


def test_data_processing_inequality_on_a_deterministic_chain() -> None:
    g = torch.Generator().manual_seed(3)
    y = torch.arange(200) % 4
    x = 3.0 * torch.nn.functional.one_hot(y, 4).double() + 0.5 * torch.randn(200, 4, generator=g,
                                                                             dtype=torch.float64)
    gx = x[:, :2]  # a projection: classes 2 and 3 become indistinguishable
    for sigma in (0.5, 1.0, 2.0, 4.0):
        i_yx = float(label_mutual_information(y, gram_matrix(x, sigma), 1.01))
        i_ygx = float(label_mutual_information(y, gram_matrix(gx, sigma), 1.01))
        assert i_yx >= i_ygx - 1e-9
    # Exact case on 0/1 kernels: merging classes loses information.
    merged = torch.where(y >= 2, 2, y)
    i_yy = float(label_mutual_information(y, label_matrix(y).double(), 1.01))
    i_ym = float(label_mutual_information(y, label_matrix(merged).double(), 1.01))
    assert i_yy == pytest.approx(2.0, abs=1e-9)
    assert i_ym == pytest.approx(renyi_of_distribution([0.25, 0.25, 0.5], 1.01), abs=1e-9)


@pytest.mark.parametrize("alpha", [0.7, 1.0, 1.01, 2.0])
def test_gradcheck_float64(alpha: float) -> None:
    g = torch.Generator().manual_seed(4)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    a = label_matrix(y).double()

    def dense(x: torch.Tensor) -> torch.Tensor:
        return mutual_information(a, gram_matrix(x, 1.3), alpha)

    def fast(x: torch.Tensor) -> torch.Tensor:
        return label_mutual_information(y, gram_matrix(x, 1.3), alpha)

    def fused(x: torch.Tensor) -> torch.Tensor:
        return gaussian_label_mutual_information(y, x, 1.3, alpha)

    assert torch.autograd.gradcheck(dense, (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(fast, (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(fused, (x,), eps=1e-6, atol=1e-6)


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 10, (64,), generator=g)
    p = torch.randn(64, 10, generator=g, dtype=torch.float64).softmax(1)
    dup = p.clone()
    dup[10:20] = dup[0]  # duplicate rows: repeated eigenvalues
    ties = torch.round(p * 4) / 4  # many exactly equal distances
    return [
        ("random", y, p, 0.3),
        ("duplicates", y, dup, 0.3),
        ("ties", y, ties, 0.3),
        ("one_class", torch.zeros(64, dtype=torch.long), p, 0.3),
        ("tiny_sigma", y, p, 1e-4),
        ("huge_sigma", y, p, 1e4),
        ("unbalanced", torch.cat([torch.zeros(60), torch.arange(4)]).long(), p, 0.5),
    ]


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 2.0])
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_fast_path_equals_dense_reference(case: tuple, alpha: float) -> None:
    _, y, p, sigma = case
    x1 = p.clone().requires_grad_(True)
    x2 = p.clone().requires_grad_(True)
    dense = mutual_information(label_matrix(y).double(), gram_matrix(x1, sigma), alpha)
    fast = label_mutual_information(y, gram_matrix(x2, sigma), alpha)
    assert float(fast.detach()) == pytest.approx(float(dense.detach()), abs=1e-8)
    (g1,) = torch.autograd.grad(dense, x1)
    (g2,) = torch.autograd.grad(fast, x2)
    assert torch.isfinite(g2).all()
    assert torch.allclose(g1, g2, atol=1e-7, rtol=1e-6)
    # The fused path (Gram built inside, gradient pulled back to x without autograd).
    x3 = p.clone().requires_grad_(True)
    fused = gaussian_label_mutual_information(y, x3, sigma, alpha)
    assert float(fused.detach()) == pytest.approx(float(dense.detach()), abs=1e-8)
    (g3,) = torch.autograd.grad(fused, x3)
    assert torch.allclose(g1, g3, atol=1e-7, rtol=1e-6)
    with torch.no_grad():  # the evaluation path (eigenvalues only) gives the same value
        assert float(gaussian_label_mutual_information(y, p, sigma, alpha)) == pytest.approx(
            float(dense.detach()), abs=1e-8)


def test_joint_entropy_of_independent_product_is_additive() -> None:
    # Block structure: A = label matrix of y1, B = label matrix of y2 with every (y1, y2) pair
    # equally often -> the joint is the product distribution, H(A,B) = H(A) + H(B).
    y1 = torch.arange(24) % 2
    y2 = (torch.arange(24) // 2) % 3
    a, b = label_matrix(y1).double(), label_matrix(y2).double()
    assert float(joint_entropy(a, b, 1.01)) == pytest.approx(1.0 + math.log2(3), abs=1e-9)


def test_kernel_alignment_known_values() -> None:
    k = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    ell = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # <K,L> = 2, ||K|| = sqrt(2.5), ||L|| = sqrt(2)
    assert float(kernel_alignment(k, ell)) == pytest.approx(2 / math.sqrt(5), abs=1e-12)
    assert float(kernel_alignment(k, k)) == pytest.approx(1.0, abs=1e-12)
    assert float(kernel_alignment(3 * k, ell)) == pytest.approx(2 / math.sqrt(5), abs=1e-12)


def test_gram_matrix_has_unit_trace_and_definition() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    a = gram_matrix(x, 5.0)
    assert float(torch.trace(a)) == pytest.approx(1.0)
    assert float(a[0, 1]) == pytest.approx(math.exp(-25 / 25) / 2)
    assert torch.allclose(pairwise_sq_dists(x), torch.tensor([[0.0, 25.0], [25.0, 0.0]],
                                                             dtype=torch.float64))


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_alpha_is_rejected(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        entropy_from_eigenvalues(torch.tensor([0.5, 0.5]), alpha)


def test_round_off_negative_eigenvalues_are_clamped() -> None:
    lam = torch.tensor([-1e-17, 0.5, 0.5], dtype=torch.float64)
    assert float(entropy_from_eigenvalues(lam, 0.5)) == pytest.approx(1.0, abs=1e-12)


def test_fused_path_keeps_the_input_dtype_and_flattens_images() -> None:
    g = torch.Generator().manual_seed(6)
    y = torch.randint(0, 3, (20,), generator=g)
    x = torch.rand(20, 1, 4, 4, generator=g, requires_grad=True)  # float32 images
    mi = gaussian_label_mutual_information(y, x, 1.0, 1.01)
    assert mi.dtype == torch.float32
    (gx,) = torch.autograd.grad(mi, x)
    assert gx.shape == x.shape and gx.dtype == torch.float32
    ref = label_mutual_information(y, gram_matrix(x.detach().double(), 1.0), 1.01)
    assert float(mi.detach()) == pytest.approx(float(ref), abs=1e-6)
    with pytest.raises(ValueError, match="sigma=0.0"):
        gaussian_label_mutual_information(y, x, 0.0, 1.01)


def test_alignment_curve_matches_full_kernel_alignment() -> None:
    from trainables.kernel_width import alignment_curve, candidate_widths

    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(40, 5, generator=g), torch.randint(0, 4, (40,), generator=g))
               for _ in range(3)]
    batches.append((torch.randn(40, 5, generator=g), torch.zeros(40, dtype=torch.long)))
    widths = candidate_widths(6.0, 25)
    curve = alignment_curve(batches, widths)
    for i, w in enumerate(widths):  # the definition, one full N x N kernel at a time
        want = sum(float(kernel_alignment(
            torch.exp(-torch.cdist(x.double(), x.double()) ** 2 / w**2),
            (y[:, None] == y[None, :]).double())) for x, y in batches) / len(batches)
        assert float(curve.alignment[i]) == pytest.approx(want, rel=1e-9)
