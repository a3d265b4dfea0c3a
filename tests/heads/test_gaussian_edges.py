"""Gaussian heads, distances and losses at the edges: tiny variances, half inputs, NaN."""

from __future__ import annotations

import math

import pytest
import torch

from textreid.heads import (
    GaussianEmbedding,
    GaussianHead,
    bhattacharyya_distance,
    csd_distance,
    gaussian_distance,
    gaussian_scores,
    kl_divergence,
    log_expected_likelihood,
    match_probability,
)
from textreid.heads.gaussian_distances import LOG_VAR_BOUND
from textreid.losses import GaussianKLLoss, PCMELoss, PointContrastLoss


def _emb(b: int, d: int, lv: float, dtype: torch.dtype = torch.float32) -> GaussianEmbedding:
    g = torch.Generator().manual_seed(b * 31 + d)
    return GaussianEmbedding(
        torch.randn(b, d, generator=g).to(dtype), torch.full((b, d), lv, dtype=dtype)
    )


@pytest.mark.parametrize("lv", [-88.8, -100.0, -1e4])
def test_diagonals_at_tiny_variances_are_exact(lv: float) -> None:
    # The issue: exp(-log σ²) overflowed float32 and 0 * inf gave NaN on these diagonals.
    x = _emb(3, 4, lv)
    mean = x.mean.clone().requires_grad_()
    log_var = x.log_var.clone().requires_grad_()
    x = GaussianEmbedding(mean, log_var)
    kl, bh = kl_divergence(x, x), bhattacharyya_distance(x, x)
    elk = log_expected_likelihood(x, x)
    torch.testing.assert_close(kl.diagonal(), torch.zeros(3))
    torch.testing.assert_close(bh.diagonal(), torch.zeros(3))
    # log N(μ; μ, 2σ²) with σ² clamped at e^-40: -½ Σ_d [log 2 - 40 + log 2π]
    want = -0.5 * 4 * (math.log(2.0) - LOG_VAR_BOUND + math.log(2.0 * math.pi))
    torch.testing.assert_close(elk.diagonal(), torch.full((3,), want))
    assert bool(torch.isfinite(kl).all() & torch.isfinite(bh).all() & torch.isfinite(elk).all())
    (kl.sum() + bh.sum() - elk.sum()).backward()
    assert mean.grad is not None
    assert log_var.grad is not None
    assert bool(torch.isfinite(mean.grad).all() & torch.isfinite(log_var.grad).all())


@pytest.mark.parametrize("name", ["csd", "wasserstein", "kl", "symmetric_kl", "elk"])
def test_half_means_of_norm_300_compute_in_float32(name: str) -> None:
    x32, y32 = _emb(3, 8, -2.0), _emb(4, 8, -1.0)
    x32 = GaussianEmbedding(x32.mean * 100, x32.log_var)  # norms ~ 300: squares overflow fp16
    y32 = GaussianEmbedding(y32.mean * 100, y32.log_var)
    x16, y16 = x32.to(torch.float16), y32.to(torch.float16)
    got = gaussian_distance(x16, y16, name)  # type: ignore[arg-type]
    assert got.dtype == torch.float32
    want = gaussian_distance(x16.to(torch.float32), y16.to(torch.float32), name)  # type: ignore[arg-type]
    torch.testing.assert_close(got, want)


def test_uncertainty_of_half_log_variances_does_not_overflow() -> None:
    g = GaussianEmbedding(torch.zeros(2, 3, dtype=torch.float16), torch.full((2, 3), 12.0).half())
    torch.testing.assert_close(g.uncertainty(), torch.full((2,), math.exp(12.0)))


def test_overflowing_distances_are_a_clear_error() -> None:
    big = GaussianEmbedding(torch.randn(2, 4) * 1e20, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"csd_distance: the distances overflow torch\.float32"):
        csd_distance(big, big)
    with pytest.raises(ValueError, match="gaussian_scores: the distances overflow"):
        gaussian_scores(big, big, "kl")
    with pytest.raises(ValueError, match="GaussianKLLoss: the loss values overflow"):
        GaussianKLLoss()(GaussianEmbedding(torch.zeros(2, 4), torch.full((2, 4), 100.0)))


def test_nan_inputs_are_refused() -> None:
    bad = GaussianEmbedding(torch.tensor([[0.0, math.nan]]), torch.zeros(1, 2))
    ok = _emb(2, 2, 0.0)
    with pytest.raises(ValueError, match=r"gaussian_scores: x\.mean contains 1 non-finite"):
        gaussian_scores(bad, ok)
    with pytest.raises(ValueError, match=r"kl_divergence: y\.mean contains 1 non-finite"):
        kl_divergence(ok, bad)
    samples = torch.zeros(1, 1, 2)
    samples[0, 0, 1] = math.nan
    with pytest.raises(ValueError, match="match_probability: x_samples contains 1 non-finite"):
        match_probability(samples, torch.zeros(1, 1, 2))
    head = GaussianHead(2, 3)
    with pytest.raises(ValueError, match="GaussianHead: features contains 1 non-finite"):
        head(torch.tensor([[1.0, math.nan]]))
    unchecked = GaussianHead(2, 3, check_finite=False)
    assert bool(torch.isnan(unchecked(torch.tensor([[1.0, math.nan]])).mean).all())


@pytest.mark.parametrize("loss", [PCMELoss(), PointContrastLoss()], ids=type)
def test_given_samples_are_checked_finite(loss: torch.nn.Module) -> None:
    emb = _emb(3, 4, -2.0)
    good = torch.randn(3, 2, 4)
    bad = good.clone()
    bad[1, 0, 2] = math.inf
    name = type(loss).__name__
    with pytest.raises(ValueError, match=f"{name}: text_samples contains 1 non-finite"):
        loss(emb, emb, image_samples=good, text_samples=bad)


def test_half_head_with_a_zero_mean_row() -> None:
    head = GaussianHead(4, 3).half()
    with torch.no_grad():
        head.mean_proj.weight.zero_()
        head.mean_proj.bias.zero_()
    x = torch.randn(2, 5, 4).half().requires_grad_()
    out = head(x)
    assert out.mean.dtype == torch.float16
    assert torch.equal(out.mean, torch.zeros(2, 3, dtype=torch.float16))
    out.mean.float().sum().backward()
    assert head.mean_proj.bias.grad is not None
    # the zero mean's Jacobian is I/eps with float16's eps (1/256): representable in float16
    torch.testing.assert_close(
        head.mean_proj.bias.grad.float(), torch.full((3,), 2 * 65504**0.5), rtol=1e-3, atol=0
    )


def test_half_mean_pooling_of_large_tokens_does_not_overflow() -> None:
    head = GaussianHead(4, 3, token_pooling="mean").half()
    tokens = torch.full((1, 6, 4), 30000.0, dtype=torch.float16)
    pooled = head._pool(tokens, None, None)
    assert torch.equal(pooled, torch.full((1, 4), 30000.0, dtype=torch.float16))
