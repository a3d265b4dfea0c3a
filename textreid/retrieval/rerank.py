"""Second-stage re-ranking: re-score a global top-k with any pairwise scorer, or k-reciprocal.

Both keep the library's conventions: higher score = more similar, ties by lower gallery index.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from textreid._checks import (
    check_features,
    check_positive,
    check_same_width,
    check_tensor,
    check_unit_interval,
)
from textreid._numerics import compute_dtype, l2_normalize
from textreid.retrieval.search import SearchResult
from textreid.retrieval.topk import _order_by_score, _select_topk

__all__ = ["k_reciprocal_rerank", "rerank_topk"]

PairScorer = Callable[[Tensor, Tensor], Tensor]


def rerank_topk(
    query_items: Tensor | None,
    gallery_items: Tensor | None,
    first_stage: SearchResult,
    scorer: PairScorer,
    k: int | None = None,
    *,
    batch_size: int = 4096,
) -> SearchResult:
    """Re-score the top ``k`` hits of a first-stage search with a pairwise scorer.

    For every query ``i`` and each of its first ``k`` hits ``g``, ``scorer`` receives the pair
    ``(query_items[i], gallery_items[g])`` — batched: two tensors with ``M`` rows each — and
    returns ``M`` scores (higher = more similar). Items can be anything indexable by rows:
    token features ``[N, L, D]`` for a token-level similarity, means and variances stacked for
    a Gaussian distance (negate distances). Pass ``None`` for either side to receive the row
    indices instead (e.g. when the scorer looks items up itself).

    Args:
        query_items: ``[Nq, ...]`` per-query items, or ``None`` for indices.
        gallery_items: ``[Ng, ...]`` per-gallery items, or ``None`` for indices.
        first_stage: result of the global search, ``[Nq, K]``.
        scorer: ``(q[M, ...], g[M, ...]) -> scores[M]``.
        k: how many of the first-stage hits to re-score (default all ``K``); the rest are
            dropped.
        batch_size: pairs per scorer call (bounds its memory).

    Returns:
        :class:`~textreid.retrieval.SearchResult` ``[Nq, k]`` sorted by the new scores, ties by
        lower gallery index.

    Raises:
        ValueError: ``k`` outside ``[1, K]``, a non-positive ``batch_size``, a scorer whose
            output does not have one finite value per pair.

    Example:
        >>> first = SearchResult(torch.tensor([[0.9, 0.8]]), torch.tensor([[3, 1]]))
        >>> rerank_topk(None, None, first, lambda q, g: -g.float()).indices
        tensor([[1, 3]])
    """
    fn = "rerank_topk"
    idx = check_tensor(first_stage.indices, "first_stage.indices", fn, ndim=2, kind="int")
    kk = idx.shape[1] if k is None else k
    if isinstance(kk, bool) or not isinstance(kk, int) or not 1 <= kk <= idx.shape[1]:
        raise ValueError(f"{fn}: k must be an int in [1, K={idx.shape[1]}], got {k!r}")
    check_positive(batch_size, "batch_size", fn)
    nq = idx.shape[0]
    g_idx = idx[:, :kk].reshape(-1)
    q_idx = torch.arange(nq, device=idx.device).repeat_interleave(kk)
    parts = []
    for s in range(0, g_idx.shape[0], batch_size):
        qi, gi = q_idx[s : s + batch_size], g_idx[s : s + batch_size]
        q = qi if query_items is None else query_items[qi.to(query_items.device)]
        g = gi if gallery_items is None else gallery_items[gi.to(gallery_items.device)]
        out = scorer(q, g)
        if not isinstance(out, Tensor) or out.shape != (qi.shape[0],):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"{fn}: scorer must return one score per pair, shape ({qi.shape[0]},), got {got}"
            )
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"{fn}: scorer returned non-finite scores (NaN/inf)")
        parts.append(out.to(idx.device))
    scores = torch.cat(parts).view(nq, kk)
    return SearchResult(*_order_by_score(scores, idx[:, :kk]))


def _nearest(dist: Tensor, n: int) -> Tensor:
    """``[N, n]`` indices of each row's ``n`` smallest distances, ties by lower index."""
    pos = _select_topk(-dist, n)
    return _order_by_score(-dist.gather(1, pos), pos)[1]


def _reciprocal(ranked: Tensor) -> Tensor:
    """``[N, n]`` mask: is ``ranked[i, a]`` a neighbour whose own list contains ``i``."""
    rows = torch.arange(ranked.shape[0], device=ranked.device).view(-1, 1, 1)
    return (ranked[ranked] == rows).any(-1)


def k_reciprocal_rerank(
    query_feats: Tensor,
    gallery_feats: Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    normalize: bool = True,
    query_block: int = 64,
) -> Tensor:
    """k-reciprocal re-ranking (Zhong, Zheng, Cao, Li; "Re-ranking Person Re-identification
    with k-reciprocal Encoding", CVPR 2017, arXiv:1701.08398).

    With ``d`` the squared Euclidean distance over all ``N = Nq + Ng`` items, each row divided
    by its maximum, ``R(i, k)`` the k-reciprocal neighbours of ``i`` (``i`` and ``j`` are in
    each other's k nearest), expanded by every ``R(c, round(k_1/2))`` of a ``c \\in R(i, k_1)``
    that shares more than 2/3 of its members with ``R(i, k_1)``:

    .. math::

        V_{ij} = \\frac{e^{-d_{ij}}}{\\sum_{j' \\in R^*(i)} e^{-d_{ij'}}}\\,[j \\in R^*(i)],
        \\quad V_i \\leftarrow \\tfrac{1}{k_2} \\sum_{n \\in N(i, k_2)} V_n,

        d_J(i, j) = 1 - \\frac{\\sum_k \\min(V_{ik}, V_{jk})}{2 - \\sum_k \\min(V_{ik}, V_{jk})},
        \\qquad d^* = (1 - \\lambda)\\, d_J + \\lambda\\, d.

    Args:
        query_feats: ``[Nq, D]`` query features.
        gallery_feats: ``[Ng, D]`` gallery features (same embedding space).
        k1: neighbourhood size of the k-reciprocal sets (paper: 20).
        k2: neighbours averaged in the local query expansion (paper: 6; 1 disables it).
        lambda_value: weight of the original distance (paper: 0.3).
        normalize: L2-normalise features first (cosine geometry, as in TIPR evaluation).
        query_block: queries per block in the Jaccard step (bounds its memory).

    Returns:
        ``[Nq, Ng]`` scores ``-d^*`` (higher = more similar), ready for
        :func:`~textreid.retrieval.evaluate` (``scores=``) or a top-k.

    Raises:
        TypeError: non-tensor or non-floating features.
        ValueError: wrong shapes or widths, non-finite values, ``k1``/``k2`` outside
            ``[1, N - 1]`` / ``[1, N]``, ``lambda_value`` outside ``[0, 1]``.

    Notes:
        Memory and time are ``O(N^2)`` (dense ``N x N`` distances and weights): meant for
        evaluation-sized sets (CUHK-PEDES test: ``N = 9,222``), not for million-item galleries.
        Differences from the reference code: ties between equal distances are broken by lower
        index (the reference uses an unstable ``argsort``); the distance is squared Euclidean
        once (the reference squares the distance it is given, so callers passing squared
        distances, as torchreid does, get the 4th power); a row whose distances are all zero is
        divided by 1 instead of producing NaN.
    """
    fn = "k_reciprocal_rerank"
    q = check_features(query_feats, "query_feats", fn, dims="(Nq, D)")
    g = check_features(gallery_feats, "gallery_feats", fn, dims="(Ng, D)")
    check_same_width(fn, q, "query_feats", g, "gallery_feats")
    n, nq = q.shape[0] + g.shape[0], q.shape[0]
    for name, value, hi in (("k1", k1, n - 1), ("k2", k2, n)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
            raise ValueError(f"{fn}: {name} must be an int in [1, {hi}] for N={n}, got {value!r}")
    check_unit_interval(lambda_value, "lambda_value", fn)
    check_positive(query_block, "query_block", fn)
    dtype = compute_dtype(q, g)
    x = torch.cat([q.to(dtype), g.to(device=q.device, dtype=dtype)])
    if normalize:
        x = l2_normalize(x, 1, dtype=dtype)
    sq = (x * x).sum(1)
    dist = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * (x @ x.T)).clamp_(min=0)
    row_max = dist.max(dim=1, keepdim=True).values
    dist = dist / torch.where(row_max > 0, row_max, torch.ones_like(row_max))

    half = round(k1 / 2)
    ranked = _nearest(dist, k1 + 1)
    recip = _reciprocal(ranked)
    ranked_h = ranked[:, : half + 1]
    recip_h = _reciprocal(ranked_h)

    member = torch.zeros(n, n, dtype=torch.bool, device=x.device)
    rows = torch.arange(n, device=x.device).unsqueeze(1).expand_as(ranked)
    member[rows[recip], ranked[recip]] = True
    # Expansion: candidate c of i joins with its own half-size set when that set overlaps i's.
    pi, pa = recip.nonzero(as_tuple=True)
    cand = ranked[pi, pa]
    cand_set, cand_ok = ranked_h[cand], recip_h[cand]
    overlap = (member[pi.unsqueeze(1), cand_set] & cand_ok).sum(1)
    accept = overlap > (2.0 / 3.0) * cand_ok.sum(1)
    expanded = member.clone()
    take = cand_ok & accept.unsqueeze(1)
    expanded[pi.unsqueeze(1).expand_as(cand_set)[take], cand_set[take]] = True

    v = torch.where(expanded, torch.exp(-dist), torch.zeros_like(dist))
    v = v / v.sum(1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    if k2 != 1:
        near = ranked[:, :k2] if k2 <= k1 + 1 else _nearest(dist, k2)
        v = torch.cat([v[near[s : s + query_block]].mean(1) for s in range(0, n, query_block)])

    # Jaccard distance through the non-zeros of each query's row (V is sparse: a few dozen
    # entries per row), so the work is Nq x Ng x nnz rather than Nq x Ng x N.
    v_gal = v[nq:]
    jaccard = torch.empty(nq, g.shape[0], dtype=dtype, device=x.device)
    for s in range(0, nq, query_block):
        vq = v[s : min(s + query_block, nq)]
        nnz = int((vq > 0).sum(1).max())
        vals, cols = torch.topk(vq, nnz, dim=1)
        common = torch.minimum(vals.unsqueeze(0), v_gal[:, cols]).sum(-1).T
        jaccard[s : s + vq.shape[0]] = 1 - common / (2 - common)
    final = (1 - lambda_value) * jaccard + lambda_value * dist[:nq, nq:]
    return -final
