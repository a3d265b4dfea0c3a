"""Pairwise Gaussian distances: closed forms vs definitions, properties, chunking, stability."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Independent, Normal
from torch.distributions import kl_divergence as td_kl

from textreid.heads import (
    GAUSSIAN_DISTANCES,
    GaussianEmbedding,
    bhattacharyya_distance,
    csd_distance,
    gaussian_distance,
    gaussian_scores,
    kl_divergence,
    log_expected_likelihood,
    match_probability,
    sample_match_logits,
    symmetric_kl_divergence,
    wasserstein2_distance,
)

Dist = Callable[..., torch.Tensor]


def _emb(b: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> GaussianEmbedding:
    g = torch.Generator().manual_seed(seed)
    return GaussianEmbedding(
        torch.randn(b, d, generator=g, dtype=dtype),
        torch.randn(b, d, generator=g, dtype=dtype) * 0.7,
    )


def _normal(g: GaussianEmbedding, i: int) -> Independent:
    return Independent(Normal(g.mean[i], g.std[i]), 1)


def test_csd_matches_monte_carlo_within_one_percent() -> None:
    x, y = _emb(2, 4, 0), _emb(3, 4, 1)
    zx = x.sample(100_000, torch.Generator().manual_seed(1))
    zy = y.sample(100_000, torch.Generator().manual_seed(2))
    mc = (zx[:, None] - zy[None]).pow(2).sum(-1).mean(-1)
    torch.testing.assert_close(csd_distance(x, y), mc, rtol=0.01, atol=0)


def test_kl_matches_torch_distributions() -> None:
    x, y = _emb(3, 5, 2), _emb(4, 5, 3)
    ref = torch.stack(
        [torch.stack([td_kl(_normal(x, i), _normal(y, j)) for j in range(4)]) for i in range(3)]
    )
    torch.testing.assert_close(kl_divergence(x, y), ref)
    torch.testing.assert_close(
        gaussian_distance(x, y, "reverse_kl"),
        ref.new_tensor(
            [[float(td_kl(_normal(y, j), _normal(x, i))) for j in range(4)] for i in range(3)]
        ),
    )
    torch.testing.assert_close(symmetric_kl_divergence(x, y), ref + kl_divergence(y, x).T)


def _quantile_grid(n: int = 20001) -> torch.Tensor:
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


def test_wasserstein_matches_quantile_definition() -> None:
    # 1-D W2² = ∫ (F_x⁻¹(u) − F_y⁻¹(u))² du; diagonal Gaussians add over dimensions
    x, y = _emb(2, 3, 4), _emb(2, 3, 5)
    u = _quantile_grid()
    ref = torch.zeros(2, 2, dtype=torch.float64)
    for i in range(2):
        for j in range(2):
            qx = Normal(x.mean[i][:, None], x.std[i][:, None]).icdf(u)
            qy = Normal(y.mean[j][:, None], y.std[j][:, None]).icdf(u)
            ref[i, j] = (qx - qy).pow(2).mean(-1).sum()
    torch.testing.assert_close(wasserstein2_distance(x, y), ref, rtol=2e-3, atol=0)


def test_bhattacharyya_matches_integral_definition() -> None:
    x, y = _emb(2, 2, 6), _emb(2, 2, 7)
    grid = torch.linspace(-30, 30, 200_001, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    ref = torch.zeros(2, 2, dtype=torch.float64)
    for i in range(2):
        for j in range(2):
            lp = Normal(x.mean[i][:, None], x.std[i][:, None]).log_prob(grid)
            lq = Normal(y.mean[j][:, None], y.std[j][:, None]).log_prob(grid)
            bc = (0.5 * (lp + lq)).exp().sum(-1) * step
            ref[i, j] = -bc.log().sum()
    torch.testing.assert_close(bhattacharyya_distance(x, y), ref, rtol=1e-6, atol=1e-9)


def test_log_elk_matches_density_of_difference() -> None:
    x, y = _emb(3, 4, 8), _emb(2, 4, 9)
    ref = torch.stack(
        [
            torch.stack(
                [
                    Independent(
                        Normal(y.mean[j], (x.variance[i] + y.variance[j]).sqrt()), 1
                    ).log_prob(x.mean[i])
                    for j in range(2)
                ]
            )
            for i in range(3)
        ]
    )
    torch.testing.assert_close(log_expected_likelihood(x, y), ref)
    torch.testing.assert_close(gaussian_distance(x, y, "elk"), -ref)


def test_hand_values_one_dimension() -> None:
    x = GaussianEmbedding(torch.tensor([[0.0]]), torch.log(torch.tensor([[1.0]])))
    y = GaussianEmbedding(torch.tensor([[2.0]]), torch.log(torch.tensor([[4.0]])))
    assert csd_distance(x, y).item() == pytest.approx(4.0 + 1.0 + 4.0)
    assert wasserstein2_distance(x, y).item() == pytest.approx(4.0 + 1.0)
    # KL(N(0,1) || N(2,4)) = 0.5 * (1/4 + 4/4 - 1 + log 4)
    assert kl_divergence(x, y).item() == pytest.approx(0.5 * (0.25 + 1.0 - 1.0 + math.log(4.0)))
    # Bhattacharyya: 1/8 * 4 / 2.5 + 0.5 * log(2.5 / 2)
    assert bhattacharyya_distance(x, y).item() == pytest.approx(0.2 + 0.5 * math.log(1.25))


SYMMETRIC = [csd_distance, wasserstein2_distance, symmetric_kl_divergence, bhattacharyya_distance]
ZERO_ON_SELF = [
    wasserstein2_distance,
    kl_divergence,
    symmetric_kl_divergence,
    bhattacharyya_distance,
]
NON_NEGATIVE = [csd_distance, *ZERO_ON_SELF]


@given(seed=st.integers(0, 10_000), b=st.integers(1, 4), d=st.integers(1, 6))
def test_properties(seed: int, b: int, d: int) -> None:
    x, y = _emb(b, d, seed), _emb(b + 1, d, seed + 1)
    for fn in SYMMETRIC:
        torch.testing.assert_close(fn(x, y), fn(y, x).T)
    for fn in ZERO_ON_SELF:
        torch.testing.assert_close(
            fn(x, x).diagonal(), torch.zeros(b, dtype=torch.float64), atol=1e-10, rtol=0
        )
    for fn in NON_NEGATIVE:
        assert bool((fn(x, y) >= 0).all())
    torch.testing.assert_close(log_expected_likelihood(x, y), log_expected_likelihood(y, x).T)


def test_zero_variance_limits() -> None:
    mu_x, mu_y = torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    x = GaussianEmbedding(mu_x, torch.full_like(mu_x, -60.0))
    y = GaussianEmbedding(mu_y, torch.full_like(mu_y, -60.0))
    sq = torch.cdist(mu_x, mu_y).pow(2)
    torch.testing.assert_close(csd_distance(x, y), sq)
    torch.testing.assert_close(wasserstein2_distance(x, y), sq)


@pytest.mark.parametrize("name", GAUSSIAN_DISTANCES)
def test_chunked_equals_unchunked(name: str) -> None:
    x, y = _emb(7, 5, 10), _emb(4, 5, 11)
    full = gaussian_distance(x, y, name)  # type: ignore[arg-type]
    for chunk in (1, 3, 7, 100):
        torch.testing.assert_close(gaussian_distance(x, y, name, chunk_size=chunk), full)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", GAUSSIAN_DISTANCES)
def test_gradcheck(name: str) -> None:
    x, y = _emb(2, 3, 12), _emb(3, 3, 13)
    leaves = [t.clone().requires_grad_() for t in (x.mean, x.log_var, y.mean, y.log_var)]

    def fn(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return gaussian_distance(GaussianEmbedding(a, b), GaussianEmbedding(c, d), name)  # type: ignore[arg-type]

    assert torch.autograd.gradcheck(fn, tuple(leaves))


@pytest.mark.parametrize("name", GAUSSIAN_DISTANCES)
@pytest.mark.parametrize("lv", [-20.0, 10.0])
def test_extreme_log_variances_are_finite(name: str, lv: float) -> None:
    mean_x = torch.randn(3, 8, requires_grad=True)
    log_var_x = torch.full((3, 8), lv, requires_grad=True)
    y = GaussianEmbedding(torch.randn(2, 8), torch.linspace(-20, 10, 16).reshape(2, 8))
    out = gaussian_distance(GaussianEmbedding(mean_x, log_var_x), y, name)  # type: ignore[arg-type]
    assert bool(torch.isfinite(out).all())
    out.sum().backward()
    assert mean_x.grad is not None
    assert log_var_x.grad is not None
    assert bool(torch.isfinite(mean_x.grad).all() and torch.isfinite(log_var_x.grad).all())


def test_match_probability_matches_loop() -> None:
    zx = torch.randn(2, 3, 4, dtype=torch.float64)
    zy = torch.randn(3, 2, 4, dtype=torch.float64)
    a, b = 2.0, 1.5
    ref = torch.zeros(2, 3, dtype=torch.float64)
    for i in range(2):
        for j in range(3):
            vals = [
                math.exp(s) / (math.exp(s) + math.exp(-s))
                for s in (
                    -a * math.sqrt(float((zx[i, k] - zy[j, k2]).pow(2).sum()) + 1e-6) + b
                    for k in range(3)
                    for k2 in range(2)
                )
            ]
            ref[i, j] = sum(vals) / len(vals)
    torch.testing.assert_close(match_probability(zx, zy, a, b), ref)
    torch.testing.assert_close(match_probability(zx, zy, a, b, chunk_size=1), ref)
    assert sample_match_logits(zx, zy, a, b).shape == (2, 3, 6)


def test_match_probability_gradient_finite_on_identical_samples() -> None:
    z = torch.randn(2, 3, 4, requires_grad=True)
    match_probability(z, z.detach().clone()).sum().backward()
    assert z.grad is not None
    assert bool(torch.isfinite(z.grad).all())


def test_gaussian_scores() -> None:
    q, g = _emb(3, 4, 14), _emb(5, 4, 15)
    res = gaussian_scores(q, g, "wasserstein", chunk_size=2)
    torch.testing.assert_close(res.scores, -wasserstein2_distance(q, g))
    torch.testing.assert_close(res.query_uncertainty, q.variance.mean(-1))
    torch.testing.assert_close(gaussian_scores(q, g, "elk").scores, log_expected_likelihood(q, g))
    torch.testing.assert_close(gaussian_scores(q, g, "kl").scores, -kl_divergence(q, g))
    p1 = gaussian_scores(q, g, "match_prob", generator=torch.Generator().manual_seed(0)).scores
    p2 = gaussian_scores(q, g, "match_prob", generator=torch.Generator().manual_seed(0)).scores
    torch.testing.assert_close(p1, p2)
    assert p1.shape == (3, 5)
    assert bool(((p1 >= 0) & (p1 <= 1)).all())


def test_errors() -> None:
    x = _emb(2, 3, 0)
    with pytest.raises(TypeError, match="csd_distance: y must be a GaussianEmbedding, got Tensor"):
        csd_distance(x, torch.zeros(2, 3))  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"kl_divergence: x\.mean has width 3 but y\.mean has width 4"
    ):
        kl_divergence(x, _emb(2, 4, 1))
    with pytest.raises(
        ValueError, match=r"bhattacharyya_distance: x has dtype torch\.float64 but y has"
    ):
        bhattacharyya_distance(x, _emb(2, 3, 1, torch.float32))
    with pytest.raises(ValueError, match="chunk_size must be None or an int >= 1, got 0"):
        wasserstein2_distance(x, x, chunk_size=0)
    with pytest.raises(ValueError, match="empty batch"):
        csd_distance(x, x[0:0])
    with pytest.raises(ValueError, match="gaussian_distance: distance must be one of"):
        gaussian_distance(x, x, "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gaussian_scores: distance must be one of"):
        gaussian_scores(x, x, "cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gaussian_scores: num_samples must be > 0"):
        gaussian_scores(x, x, "match_prob", num_samples=0)
    with pytest.raises(ValueError, match=r"x_samples must be 3-D \(B_x, K, D\)"):
        match_probability(torch.zeros(2, 3), torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="need at least one sample per item"):
        match_probability(torch.zeros(2, 0, 3), torch.zeros(2, 1, 3))
