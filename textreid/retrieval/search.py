"""Exact top-k search, streamed over query blocks and gallery chunks.

Tie rule everywhere in :mod:`textreid.retrieval`: among equal scores the lower gallery index
comes first, i.e. the order of a *stable* descending sort. ``torch.topk`` alone does not
promise which of several tied items it keeps, so rows where a tie straddles the cut-off are
re-selected with a stable sort (rare with float features; exact either way).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from textreid._checks import (
    check_choice,
    check_features,
    check_positive,
    check_same_width,
)
from textreid._numerics import compute_dtype
from textreid.retrieval.scores import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_QUERY_BLOCK,
    _row_norms,
    _rows,
    _score_chunks,
)

__all__ = ["SearchResult", "topk_search"]

Backend = Literal["torch", "faiss"]


class SearchResult(NamedTuple):
    """Top-k hits per query, best first.

    Attributes:
        scores: ``[Nq, K]`` scores (higher is more similar), float32 (float64 for float64
            inputs).
        indices: ``[Nq, K]`` int64 gallery indices; ties are ordered by lower index first.
    """

    scores: Tensor
    indices: Tensor


def _order_by_score(scores: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by score descending, ties by gallery index ascending."""
    by_index = torch.argsort(indices, dim=1)
    scores, indices = scores.gather(1, by_index), indices.gather(1, by_index)
    by_score = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return scores.gather(1, by_score), indices.gather(1, by_score)


def _select_topk(values: Tensor, k: int) -> Tensor:
    """Column positions of the top ``k`` of each row, ties to the lower position.

    ``torch.topk`` keeps an unspecified subset of values tied at the cut-off. Taking ``k + 1``
    reveals such rows (the k-th and (k+1)-th values are equal); only those are redone with a
    stable sort, so the common tie-free case costs one ``topk``.
    """
    top = torch.topk(values, min(k + 1, values.shape[1]), dim=1, sorted=True)
    pos = top.indices[:, :k]
    if top.indices.shape[1] > k:
        straddles = top.values[:, k - 1] == top.values[:, k]
        if bool(straddles.any()):
            rows = straddles.nonzero().squeeze(1)
            stable = torch.sort(values[rows], dim=1, descending=True, stable=True).indices
            pos = pos.clone()
            pos[rows] = stable[:, :k]
    return pos


_GROUP = 32
"""Columns per group in :func:`_candidates`."""


def _candidates(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Ascending columns ``[B, k * _GROUP]`` of each row that hold its top ``k``, and their
    scores.

    Columns are cut into groups of :data:`_GROUP`; the ``k`` groups with the largest maxima
    (ties to the lower group, i.e. the stable order) contain the top ``k``: any item outside
    them has ``k`` group maxima ahead of it in the stable order. One max-reduction over the
    block and a ``topk`` over the few candidates cost far less than a ``topk`` over the block.
    Slots of a last, partial group past the block get the lowest score and, sitting after
    every real column, lose all ties, so they are never selected (the groups hold at least
    ``k`` real columns).
    """
    c = scores.shape[1]
    full = c // _GROUP * _GROUP
    maxima = scores[:, :full].reshape(scores.shape[0], -1, _GROUP).amax(2)
    if full < c:
        maxima = torch.cat([maxima, scores[:, full:].amax(1, keepdim=True)], 1)
    groups = torch.sort(_select_topk(maxima, k), dim=1).values
    cols = (groups.unsqueeze(2) * _GROUP + torch.arange(_GROUP, device=scores.device)).flatten(1)
    past = cols >= c
    vals = scores.gather(1, cols.clamp(max=c - 1)).masked_fill_(past, torch.finfo(scores.dtype).min)
    return cols, vals


def _chunk_topk(scores: Tensor, start: int, k: int) -> tuple[Tensor, Tensor]:
    """Ordered top-``k`` of one ``[B, C]`` score block whose columns start at ``start``."""
    k = min(k, scores.shape[1])
    if 4 * k * _GROUP > scores.shape[1]:
        pos = _select_topk(scores, k)
    else:
        cols, vals = _candidates(scores, k)
        pos = cols.gather(1, _select_topk(vals, k))
    return _order_by_score(scores.gather(1, pos), pos + start)


def _merge(
    best: tuple[Tensor, Tensor] | None, cand: tuple[Tensor, Tensor], k: int
) -> tuple[Tensor, Tensor]:
    """Top-k of the running hits and an ordered candidate list from a later chunk.

    Both lists are ordered (score desc, index asc) and every running index is below every
    candidate index, so after concatenation equal scores sit in index order and a stable
    selection by position realises the tie rule.
    """
    if best is None:
        return cand
    s, i = torch.cat([best[0], cand[0]], 1), torch.cat([best[1], cand[1]], 1)
    pos = _select_topk(s, min(k, s.shape[1]))
    return _order_by_score(s.gather(1, pos), i.gather(1, pos))


def _torch_search(
    query: Tensor, gallery: Tensor, k: int, chunk_size: int, query_block: int, normalize: bool
) -> SearchResult:
    dtype, device = compute_dtype(query, gallery), query.device
    g_norms = _row_norms(gallery, dtype, device, chunk_size) if normalize else None
    q_norms = _row_norms(query, dtype, device, query_block) if normalize else None
    out_s = torch.empty(query.shape[0], k, dtype=dtype, device=device)
    out_i = torch.empty(query.shape[0], k, dtype=torch.int64, device=device)
    for q0 in range(0, query.shape[0], query_block):
        q_rows = _rows(query, slice(q0, q0 + query_block), q_norms, dtype, device)
        best: tuple[Tensor, Tensor] | None = None
        for chunk in _score_chunks(q_rows, gallery, g_norms, chunk_size):
            best = _merge(best, _chunk_topk(chunk.scores, chunk.start, k), k)
        assert best is not None  # the gallery is non-empty
        out_s[q0 : q0 + len(q_rows)], out_i[q0 : q0 + len(q_rows)] = best
    return SearchResult(out_s, out_i)


def _faiss_search(
    query: Tensor, gallery: Tensor, k: int, chunk_size: int, query_block: int, normalize: bool
) -> SearchResult:
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            'topk_search(backend="faiss") needs the faiss package: pip install faiss-cpu '
            '(or textreid[faiss]); backend="torch" needs nothing extra'
        ) from e
    dtype = torch.float32
    q_norms = _row_norms(query, dtype, torch.device("cpu"), query_block) if normalize else None
    g_norms = _row_norms(gallery, dtype, torch.device("cpu"), chunk_size) if normalize else None
    q_all = _rows(query, slice(None), q_norms, dtype, torch.device("cpu")).contiguous()
    best: tuple[Tensor, Tensor] | None = None
    for g0 in range(0, gallery.shape[0], chunk_size):
        g = _rows(gallery, slice(g0, g0 + chunk_size), g_norms, dtype, torch.device("cpu"))
        index = faiss.IndexFlatIP(g.shape[1])
        index.add(g.contiguous().numpy())
        s, i = index.search(q_all.numpy(), min(k, g.shape[0]))
        cand = _order_by_score(torch.from_numpy(s), torch.from_numpy(i) + g0)
        best = _merge(best, cand, k)
    assert best is not None  # the gallery is non-empty
    return SearchResult(best[0].to(query.device), best[1].to(query.device))


def topk_search(
    query: Tensor,
    gallery: Tensor,
    k: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    query_block: int = DEFAULT_QUERY_BLOCK,
    normalize: bool = False,
    backend: Backend = "torch",
    check_finite: bool = True,
) -> SearchResult:
    """Exact top-``k`` gallery items for every query, without the full score matrix.

    Scores are inner products ``query @ gallery.T`` (cosine with ``normalize=True``),
    computed in ``query_block x chunk_size`` blocks and merged into a running top-k, so memory
    does not grow with the gallery. float16/bfloat16 inputs are accumulated in float32. The
    search runs on the device of ``query``; a gallery stored elsewhere (e.g. on CPU for a
    GPU query) is moved one chunk at a time.

    Args:
        query: ``[Nq, D]`` query features (e.g. text embeddings).
        gallery: ``[Ng, D]`` gallery features (e.g. image embeddings).
        k: hits per query, ``1 <= k <= Ng``. A ``k`` larger than the gallery is an error
            rather than a silent clamp, so the result's shape is always ``[Nq, k]``.
        chunk_size: gallery rows per block.
        query_block: query rows per block.
        normalize: L2-normalise rows first (cosine similarity).
        backend: ``"torch"`` (default) or ``"faiss"`` (``faiss.IndexFlatIP`` per chunk on CPU,
            results moved back to the query's device; needs ``faiss-cpu``). faiss computes the
            same exact scores up to float rounding, but which of several tied items it keeps at
            the cut-off is its own choice.
        check_finite: raise on NaN/inf features (one pass over the inputs).

    Returns:
        :class:`SearchResult` with ``scores`` ``[Nq, K]`` and ``indices`` ``[Nq, K]``, best
        first, ties by lower gallery index.

    Raises:
        TypeError: non-tensor or non-floating features.
        ValueError: wrong shapes or widths, empty inputs, non-finite values, ``k`` outside
            ``[1, Ng]``, a non-positive block size, an unknown backend.
        ImportError: ``backend="faiss"`` without faiss installed.

    Example:
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        >>> topk_search(torch.tensor([[1.0, 0.1]]), g, 2).indices
        tensor([[0, 2]])
    """
    fn = "topk_search"
    check_features(query, "query", fn, dims="(Nq, D)", finite=check_finite)
    check_features(gallery, "gallery", fn, dims="(Ng, D)", finite=check_finite)
    check_same_width(fn, query, "query", gallery, "gallery")
    check_positive(chunk_size, "chunk_size", fn)
    check_positive(query_block, "query_block", fn)
    check_choice(backend, "backend", fn, ("torch", "faiss"))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= gallery.shape[0]:
        raise ValueError(
            f"{fn}: k must be an int in [1, Ng={gallery.shape[0]}], got {k!r}; "
            f"pass k=min(k, len(gallery)) to ask for everything"
        )
    run = _torch_search if backend == "torch" else _faiss_search
    return run(query, gallery, k, chunk_size, query_block, normalize)
