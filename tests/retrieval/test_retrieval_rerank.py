"""Re-ranking: rerank_topk re-sorts a first stage; k-reciprocal equals a plain loop version."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from textreid.retrieval import SearchResult, k_reciprocal_rerank, rerank_topk, topk_search


def _k_reciprocal_loops(q: Tensor, g: Tensor, k1: int, k2: int, lam: float) -> np.ndarray:
    """Zhong et al. (CVPR 2017) written out with loops and sets, on squared L2 distances."""
    x = F.normalize(torch.cat([q, g]).double(), dim=1).numpy()
    n, nq = len(x), len(q)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    d = d / d.max(axis=1, keepdims=True)
    rank = np.argsort(d, axis=1, kind="stable")

    def recip(i: int, k: int) -> set[int]:
        return {int(j) for j in rank[i, : k + 1] if i in rank[j, : k + 1]}

    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        expanded = set(r)
        for c in r:
            rc = recip(c, round(k1 / 2))
            if len(rc & r) > 2 / 3 * len(rc):
                expanded |= rc
        idx = sorted(expanded)
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    out = np.zeros((nq, n - nq))
    for i in range(nq):
        for j in range(n - nq):
            m = np.minimum(v[i], v[nq + j]).sum()
            out[i, j] = (1 - lam) * (1 - m / (2 - m)) + lam * d[i, nq + j]
    return -out


@pytest.mark.parametrize(
    ("k1", "k2", "lam"), [(20, 6, 0.3), (5, 1, 0.0), (4, 3, 1.0), (3, 10, 0.5)]
)
def test_k_reciprocal_equals_loop_version(k1: int, k2: int, lam: float) -> None:
    gen = torch.Generator().manual_seed(k1)
    protos = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    q = protos.repeat(2, 1) + 0.5 * torch.randn(12, 8, generator=gen, dtype=torch.float64)
    g = protos.repeat(3, 1) + 0.5 * torch.randn(18, 8, generator=gen, dtype=torch.float64)
    got = k_reciprocal_rerank(q, g, k1, k2, lam, query_block=5)
    np.testing.assert_allclose(got.numpy(), _k_reciprocal_loops(q, g, k1, k2, lam), atol=1e-12)


def test_k_reciprocal_helps_and_handles_float32() -> None:
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(10, 16, generator=gen), torch.randn(15, 16, generator=gen)
    out = k_reciprocal_rerank(q, g, k1=6, k2=3)
    assert out.shape == (10, 15)
    assert out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    dup = k_reciprocal_rerank(torch.ones(2, 3), torch.ones(3, 3), k1=2, k2=2)
    assert bool(torch.isfinite(dup).all())  # all distances zero: no NaN


def test_k_reciprocal_errors() -> None:
    q, g = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(
        ValueError, match=r"k_reciprocal_rerank: k1 must be an int in \[1, 7\] for N=8, got 8"
    ):
        k_reciprocal_rerank(q, g, k1=8)
    with pytest.raises(ValueError, match=r"k2 must be an int in \[1, 8\]"):
        k_reciprocal_rerank(q, g, k1=3, k2=0)
    with pytest.raises(ValueError, match=r"lambda_value must be in \[0, 1\], got 1.5"):
        k_reciprocal_rerank(q, g, k1=3, lambda_value=1.5)
    with pytest.raises(ValueError, match="query_feats has width 4 but gallery_feats has width 3"):
        k_reciprocal_rerank(q, torch.randn(5, 3), k1=3)


def test_rerank_topk_resorts_by_new_scores_with_index_ties() -> None:
    gen = torch.Generator().manual_seed(1)
    q, g = torch.randn(4, 6, generator=gen), torch.randn(20, 6, generator=gen)
    first = topk_search(q, g, 8, normalize=False)
    tokens_q, tokens_g = torch.randn(4, 3, 6, generator=gen), torch.randn(20, 3, 6, generator=gen)

    def token_max_sim(a: Tensor, b: Tensor) -> Tensor:  # a token-level scorer
        return torch.einsum("mld,mpd->mlp", a, b).amax(-1).mean(-1)

    got = rerank_topk(tokens_q, tokens_g, first, token_max_sim, k=5, batch_size=3)
    for i in range(4):
        cand = first.indices[i, :5]
        s = torch.stack([token_max_sim(tokens_q[i : i + 1], tokens_g[c : c + 1])[0] for c in cand])
        order = sorted(range(5), key=lambda j: (-float(s[j]), int(cand[j])))
        assert got.indices[i].tolist() == [int(cand[j]) for j in order]
        torch.testing.assert_close(got.scores[i], s[order])
    # constant scorer: every score ties, so hits come back by gallery index
    flat = rerank_topk(None, None, first, lambda qi, gi: torch.zeros(len(gi)))
    assert torch.equal(flat.indices, first.indices.sort(dim=1).values)


def test_rerank_topk_errors() -> None:
    first = SearchResult(torch.zeros(2, 3), torch.tensor([[0, 1, 2], [2, 1, 0]]))
    with pytest.raises(ValueError, match=r"rerank_topk: k must be an int in \[1, K=3\], got 4"):
        rerank_topk(None, None, first, lambda a, b: a.float(), k=4)
    with pytest.raises(
        ValueError, match=r"scorer must return one score per pair, shape \(6,\), got \(6, 1\)"
    ):
        rerank_topk(None, None, first, lambda a, b: a.float().unsqueeze(1))
    with pytest.raises(ValueError, match="scorer returned non-finite"):
        rerank_topk(None, None, first, lambda a, b: a.float() / 0)
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        rerank_topk(None, None, first, lambda a, b: a.float(), batch_size=0)
