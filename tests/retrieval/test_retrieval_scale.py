"""Cosine retrieval is scale-invariant: features of 1e19 or 1e-30 give the scores of unit ones."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tests.retrieval._helpers import stable_topk
from textreid.retrieval import cosine_scores, evaluate, k_reciprocal_rerank, topk_search


def _cosines64(q: Tensor, g: Tensor) -> Tensor:
    """Exact cosines from float64 copies (no scaling question arises at these magnitudes)."""
    qd, gd = q.double(), g.double()
    return (qd / qd.norm(dim=1, keepdim=True)) @ (gd / gd.norm(dim=1, keepdim=True)).T


def _case() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(7, 16, generator=gen), torch.randn(30, 16, generator=gen)
    qp = torch.arange(7)
    gp = torch.arange(30) % 10
    return q, g, qp, gp


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e-20, 1e-30])
def test_scaled_features_give_unit_scores(scale: float) -> None:
    q, g, _, _ = _case()
    ref = _cosines64(q, g).float()
    scores = torch.cat([c.scores for c in cosine_scores(q * scale, g * scale, chunk_size=8)], 1)
    torch.testing.assert_close(scores, ref, rtol=0, atol=2e-6)
    hits = topk_search(q * scale, g * scale, 5, normalize=True, screen="off")
    want = stable_topk(_cosines64(q, g), 5)
    assert torch.equal(hits.indices, want.indices)
    torch.testing.assert_close(hits.scores, want.scores.float(), rtol=0, atol=2e-6)


def test_evaluate_at_1e19_equals_unit_features() -> None:
    # The case: at 1e19 the squared norms overflowed float32, every score was 0 and
    # the tie rule ranked the gallery in index order (R@5 71.4 instead of 42.9).
    q, g, qp, gp = _case()
    q, g = q[:, :4], g[:, :4]
    base = evaluate(query=q, gallery=g, query_pids=qp, gallery_pids=gp, ks=(1, 5))
    big = evaluate(query=q * 1e19, gallery=g * 1e19, query_pids=qp, gallery_pids=gp, ks=(1, 5))
    assert big.to_dict() == base.to_dict()


def test_half_features_near_their_largest_value() -> None:
    q, g, _, _ = _case()
    qh = (q / q.abs().amax() * 60000).half()
    gh = (g / g.abs().amax() * 60000).half()
    hits = topk_search(qh, gh, 3, normalize=True)
    assert torch.equal(hits.indices, stable_topk(_cosines64(qh, gh), 3).indices)


def test_zero_row_scores_zero_and_does_not_poison_others() -> None:
    q, g, _, _ = _case()
    g = g.clone()
    g[4] = 0.0
    scores = torch.cat([c.scores for c in cosine_scores(q, g)], 1)
    assert torch.equal(scores[:, 4], torch.zeros(7))
    keep = torch.arange(30) != 4
    torch.testing.assert_close(scores[:, keep], _cosines64(q, g[keep]).float(), rtol=0, atol=2e-6)


def test_rerank_normalisation_is_scale_invariant() -> None:
    q, g, _, _ = _case()
    base = k_reciprocal_rerank(q, g, k1=5, k2=3)
    big = k_reciprocal_rerank(q * 1e19, g * 1e19, k1=5, k2=3)
    torch.testing.assert_close(big, base, rtol=1e-5, atol=1e-6)


def test_norm_beyond_float32_is_a_clear_error() -> None:
    q, g, _, _ = _case()
    g = g.clone()
    g[3] = 3e38
    with pytest.raises(ValueError, match="topk_search: gallery has rows whose L2 norm exceeds"):
        topk_search(q, g, 2, normalize=True)
    with pytest.raises(ValueError, match="evaluate: gallery_feats has rows whose L2 norm"):
        evaluate(
            query=q,
            gallery=g,
            query_pids=torch.arange(7),
            gallery_pids=torch.arange(30),
        )
