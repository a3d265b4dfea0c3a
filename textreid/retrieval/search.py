"""Exact top-k search, streamed over query blocks and gallery chunks.

Ties follow the rule of :mod:`textreid.retrieval.topk`: among equal scores the lower gallery
index comes first.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Protocol

import torch
from torch import Tensor

from textreid._checks import (
    check_choice,
    check_features,
    check_positive,
    check_same_width,
)
from textreid._deprecation import warn_deprecated
from textreid._numerics import compute_dtype
from textreid.retrieval.scorers import (
    CosineScorer,
    Features,
    Scorer,
    Side,
    as_features,
    check_scorer,
    features_to,
    global_tensor,
    num_rows,
    slice_rows,
    take_rows,
)
from textreid.retrieval.scores import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_QUERY_BLOCK,
    _row_norms,
    _rows,
    _scores,
)
from textreid.retrieval.screening import (
    GROUP,
    ScreenChunk,
    native_bf16,
    screen_chunk,
    screen_queries,
    screened_topk,
)
from textreid.retrieval.topk import _chunk_topk, _merge, _order_by_score

__all__ = ["Reranker", "SearchResult", "topk_search"]

_FN = "topk_search"

Backend = Literal["torch", "faiss"]
Screen = Literal["auto", "bf16", "off"]

_SCREEN_MIN_QUERIES = 64
"""``screen="auto"`` screens searches with at least this many queries: preparing a gallery
chunk costs a pass over it, which a few queries do not win back (measured break-even near 40
queries against a 1M x 512 gallery, 2 threads)."""

_SCREEN_MIN_GROUPS = 4
"""A chunk is screened when it has at least this many column groups per hit: fewer, and the
``k`` best groups hold most of the chunk."""


class _Hits(NamedTuple):
    scores: Tensor
    indices: Tensor


class SearchResult(_Hits):
    """Top-k hits per query, best first.

    A pair ``(scores, indices)``, so ``scores, indices = result`` keeps working; scorers with
    an uncertainty (:class:`~textreid.retrieval.GaussianScorer`) and galleries that know
    their items add them as attributes.

    Attributes:
        scores: ``[Nq, K]`` scores (higher is more similar), float32 (float64 for float64
            inputs).
        indices: ``[Nq, K]`` int64 gallery indices; ties are ordered by lower index first.
        query_uncertainty: ``[Nq]`` uncertainty of each query, or ``None`` (cosine and part
            scorers have none).
        gallery_uncertainty: ``[Nq, K]`` uncertainty of each hit, or ``None``.
        gallery_ids: ``[Nq][K]`` id of each hit (a list per query), where the gallery knows
            ids (e.g. a retriever's indexed gallery), else ``None``.
        gallery_paths: ``[Nq][K]`` file path of each hit, where the gallery knows paths,
            else ``None``.
    """

    query_uncertainty: Tensor | None
    gallery_uncertainty: Tensor | None
    gallery_ids: list[Any] | None
    gallery_paths: list[list[str]] | None

    def __new__(
        cls,
        scores: Tensor,
        indices: Tensor,
        query_uncertainty: Tensor | None = None,
        gallery_uncertainty: Tensor | None = None,
        gallery_ids: list[Any] | None = None,
        gallery_paths: list[list[str]] | None = None,
    ) -> SearchResult:
        self = super().__new__(cls, scores, indices)
        self.query_uncertainty = query_uncertainty
        self.gallery_uncertainty = gallery_uncertainty
        self.gallery_ids = gallery_ids
        self.gallery_paths = gallery_paths
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (*self, *self._extras())

    def _extras(self) -> tuple[Any, ...]:
        return (
            self.query_uncertainty,
            self.gallery_uncertainty,
            self.gallery_ids,
            self.gallery_paths,
        )

    def __repr__(self) -> str:
        names = ("query_uncertainty", "gallery_uncertainty", "gallery_ids", "gallery_paths")
        parts = [f"scores={self.scores!r}", f"indices={self.indices!r}"]
        parts += [f"{n}={v!r}" for n, v in zip(names, self._extras()) if v is not None]
        return f"SearchResult({', '.join(parts)})"


class Reranker(Protocol):
    """A second stage for :func:`topk_search` (``rerank=``), e.g.
    :class:`~textreid.retrieval.TokenReranker`."""

    def check(self, query: Features, gallery: Features, *, fn: str | None = None) -> None:
        """Refuse features the second stage cannot read (called before the search runs)."""

    def rerank(self, result: SearchResult, query: Features, gallery: Features) -> SearchResult:
        """The hits of ``result`` re-scored and re-ordered, best first."""


def _chunk_hits(
    q_rows: Tensor,
    chunk: Tensor,
    screen: ScreenChunk | None,
    start: int,
    k: int,
    best: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor]:
    """Running top-k of a query block after one gallery chunk (screened when prepared)."""
    if screen is not None:
        floor = None if best is None or best[0].shape[1] < k else best[0][:, k - 1]
        screened = screened_topk(screen_queries(q_rows), screen, start, k, floor)
        if screened is not None:
            (scores, index), exact_rows = screened
            if exact_rows.numel():
                exact = _chunk_topk(_scores(q_rows[exact_rows], chunk), start, k)
                scores[exact_rows], index[exact_rows] = exact
            return _merge(best, (scores, index), k)
    return _merge(best, _chunk_topk(_scores(q_rows, chunk), start, k), k)


def _torch_search(
    query: Tensor,
    gallery: Tensor,
    k: int,
    chunk_size: int,
    query_block: int,
    normalize: bool,
    screen: bool,
) -> SearchResult:
    # Gallery chunks outside, query blocks inside: each chunk is read (from disk, for a
    # memory-mapped gallery) and prepared once; the running hits live in the outputs.
    dtype, device = compute_dtype(query, gallery), query.device
    g_norms = _row_norms(gallery, dtype, device, chunk_size, _FN, "gallery") if normalize else None
    q_norms = _row_norms(query, dtype, device, query_block, _FN, "query") if normalize else None
    out_s = torch.empty(query.shape[0], k, dtype=dtype, device=device)
    out_i = torch.empty(query.shape[0], k, dtype=torch.int64, device=device)
    for g0 in range(0, gallery.shape[0], chunk_size):
        chunk = _rows(gallery, slice(g0, g0 + chunk_size), g_norms, dtype, device)
        wide = chunk.shape[0] >= _SCREEN_MIN_GROUPS * k * GROUP
        prepared = screen_chunk(chunk) if screen and wide else None
        for q0 in range(0, query.shape[0], query_block):
            q_rows = _rows(query, slice(q0, q0 + query_block), q_norms, dtype, device)
            rows = slice(q0, q0 + q_rows.shape[0])
            have = min(k, g0)  # hits so far: the first chunks may hold fewer than k
            best = None if g0 == 0 else (out_s[rows, :have], out_i[rows, :have])
            hits = _chunk_hits(q_rows, chunk, prepared, g0, k, best)
            out_s[rows, : hits[0].shape[1]], out_i[rows, : hits[1].shape[1]] = hits
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
    cpu = torch.device("cpu")
    q_norms = _row_norms(query, dtype, cpu, query_block, _FN, "query") if normalize else None
    g_norms = _row_norms(gallery, dtype, cpu, chunk_size, _FN, "gallery") if normalize else None
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


def _read(scorer: Scorer, f: Features, side: Side) -> dict[str, Tensor]:
    """The tensors of ``f`` that ``scorer`` reads (others, e.g. stored tokens, stay put)."""
    return {key: f[key] for key in scorer.required_keys(side)}


def _device(f: Features) -> torch.device:
    return next(iter(f.values())).device


def _score_block(scorer: Scorer, q: Features, g: Features, fn: str) -> Tensor:
    """``scorer.score``, refused unless it is one floating score per pair."""
    out = scorer.score(q, g)
    want = (num_rows(q), num_rows(g))
    if not isinstance(out, Tensor) or tuple(out.shape) != want or not out.is_floating_point():
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{fn}: {type(scorer).__name__}.score must return floating scores of shape "
            f"{want} (query rows x gallery rows), got {got}"
        )
    return out


def _uncertainty_of(
    scorer: Scorer,
    f: Features,
    side: Side,
    rows: Tensor | None,
    step: int,
    device: torch.device,
    fn: str,
) -> Tensor | None:
    """``scorer.uncertainty`` of the items ``rows`` of ``f`` (all with ``None``), ``step``
    items at a time so that the gathered features stay bounded; ``None`` if it has none."""
    n = num_rows(f) if rows is None else rows.shape[0]
    parts = []
    for s in range(0, n, step):
        items = slice_rows(f, s, s + step) if rows is None else take_rows(f, rows[s : s + step])
        u = scorer.uncertainty(items, side)
        if u is None:
            return None
        want = min(step, n - s)
        if not isinstance(u, Tensor) or tuple(u.shape) != (want,):
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(
                f"{fn}: {type(scorer).__name__}.uncertainty must return one value per "
                f"{side} item, shape ({want},), got {got}"
            )
        parts.append(u.to(device))
    return torch.cat(parts)


def _scorer_search(
    scorer: Scorer,
    query: Features,
    gallery: Features,
    k: int,
    chunk_size: int,
    query_block: int,
    fn: str,
) -> SearchResult:
    """The dense chunked search through any scorer (the loop order of :func:`_torch_search`)."""
    device = _device(query)
    nq, ng = num_rows(query), num_rows(gallery)
    out: tuple[Tensor, Tensor] | None = None
    for g0 in range(0, ng, chunk_size):
        chunk = features_to(slice_rows(gallery, g0, g0 + chunk_size), device)
        prepared = scorer.prepare(chunk, "gallery")
        for q0 in range(0, nq, query_block):
            # Prepared again per chunk (as the cosine path divides by the norms per chunk):
            # a query block costs a pass over its rows, the block's scores Ng times more.
            block = features_to(slice_rows(query, q0, q0 + query_block), device)
            s = _score_block(scorer, scorer.prepare(block, "query"), prepared, fn)
            if out is None:
                out = (
                    torch.empty(nq, k, dtype=s.dtype, device=device),
                    torch.empty(nq, k, dtype=torch.int64, device=device),
                )
            rows = slice(q0, q0 + s.shape[0])
            have = min(k, g0)
            best = None if g0 == 0 else (out[0][rows, :have], out[1][rows, :have])
            hits = _merge(best, _chunk_topk(s, g0, k), k)
            out[0][rows, : hits[0].shape[1]], out[1][rows, : hits[1].shape[1]] = hits
    assert out is not None  # the gallery is non-empty
    # Only the hit rows of the gallery are read: the cost is bounded by Nq x k, not Ng.
    q_u = _uncertainty_of(scorer, query, "query", None, chunk_size, device, fn)
    g_u = _uncertainty_of(scorer, gallery, "gallery", out[1].reshape(-1), chunk_size, device, fn)
    return SearchResult(out[0], out[1], q_u, None if g_u is None else g_u.view(out[1].shape))


def _check_k(k: object, ng: int, fn: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= ng:
        raise ValueError(
            f"{fn}: k must be an int in [1, Ng={ng}], got {k!r}; "
            f"pass k=min(k, len(gallery)) to ask for everything"
        )


def _search_with(
    scorer: Scorer,
    query: Tensor | Features,
    gallery: Tensor | Features,
    k: int,
    chunk_size: int,
    query_block: int,
    backend: str,
    screen: str,
    check_finite: bool,
) -> SearchResult:
    """:func:`topk_search` through a scorer other than cosine: checks, then the dense path."""
    fn = _FN
    q = scorer.validate(query, "query", fn, finite=check_finite)
    g = scorer.validate(gallery, "gallery", fn, finite=check_finite)
    scorer.check_pair(q, g, fn)
    check_positive(chunk_size, "chunk_size", fn)
    check_positive(query_block, "query_block", fn)
    check_choice(backend, "backend", fn, ("torch", "faiss"))
    _check_k(k, num_rows(g), fn)
    check_choice(screen, "screen", fn, ("auto", "bf16", "off"))
    if backend != "torch" or screen == "bf16":
        raise ValueError(
            f'{fn}: backend="faiss" and screen="bf16" speed up cosine scores only; '
            f'{type(scorer).__name__} searches with backend="torch" and screen="auto" or "off"'
        )
    q, g = _read(scorer, q, "query"), _read(scorer, g, "gallery")
    return _scorer_search(scorer, q, g, k, chunk_size, query_block, fn)


def topk_search(
    query: Tensor | Features,
    gallery: Tensor | Features,
    k: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    query_block: int = DEFAULT_QUERY_BLOCK,
    normalize: bool | None = None,
    backend: Backend = "torch",
    screen: Screen = "auto",
    check_finite: bool = True,
    scorer: Scorer | None = None,
    rerank: Reranker | None = None,
) -> SearchResult:
    """Exact top-``k`` gallery items for every query, without the full score matrix.

    Without ``scorer``, scores are inner products ``query @ gallery.T`` (cosine with
    ``normalize=True``) of the global features. With a ``scorer``
    (:mod:`textreid.retrieval.scorers`) they are whatever the method defines: Gaussian
    distances, part similarities... Either way they are computed in ``query_block x
    chunk_size`` blocks and merged into a running top-k, so memory does not grow with the
    gallery. float16/bfloat16 inputs are accumulated in float32. The search runs on the device
    of ``query``; a gallery stored elsewhere (e.g. on CPU for a GPU query) is moved one chunk
    at a time.

    Args:
        query: ``[Nq, D]`` query features (e.g. text embeddings), or a features mapping
            (a tensor means ``{"global": tensor}``).
        gallery: ``[Ng, D]`` gallery features (e.g. image embeddings), or a features mapping.
        k: hits per query, ``1 <= k <= Ng``. A ``k`` larger than the gallery is an error
            rather than a silent clamp, so the result's shape is always ``[Nq, k]``.
        chunk_size: gallery rows per block.
        query_block: query rows per block.
        normalize: L2-normalise rows first (cosine similarity); ``False``: inner products.
            One rule with :func:`~textreid.retrieval.evaluate`: the default becomes
            ``True`` (cosine) in 1.0; until then, a call without ``normalize`` (and
            without ``scorer``) keeps inner products and warns (``FutureWarning``).
        backend: ``"torch"`` (default) or ``"faiss"`` (``faiss.IndexFlatIP`` per chunk on CPU,
            results moved back to the query's device; needs ``faiss-cpu``). faiss computes the
            same exact scores up to float rounding, but which of several tied items it keeps at
            the cut-off is its own choice.
        screen: ``"bf16"`` scores all pairs with a bfloat16 matmul first and rescores, in the
            compute dtype, only the pairs a rigorous error bound cannot rule out (see
            :mod:`textreid.retrieval.screening`); the hits are the same exact top-k, and this
            is about 1.6x faster where the CPU has native bfloat16 dot products. ``"off"``
            scores every pair in the compute dtype. ``"auto"`` (default) screens on such
            CPUs, for float32 features, at least 64 queries and the torch backend; nowhere
            else. CPU only: ``"bf16"`` on
            another device is an error (GPU bfloat16 matmuls may reduce in lower precision,
            which the bound does not cover). Returned scores of the two paths can differ in
            the last bit (another summation order), as between chunk sizes.
        check_finite: raise on NaN/inf features (one pass over the inputs).
        scorer: how features compare (default: the global features' inner product, cosine
            with ``normalize=True``). :class:`~textreid.retrieval.CosineScorer` takes the same
            path as a plain search; other scorers use the dense chunked path (no screen, no
            faiss) and are handed one query block and one gallery chunk at a time.
        rerank: a second stage that re-scores the ``k`` hits of each query from what else
            the features hold, e.g. a :class:`~textreid.retrieval.TokenReranker` reading
            ``"tokens"`` (its memory is bounded by ``k``, not the gallery); the result is the
            ``k`` hits in its order. For the best few of ``K`` re-scored candidates, pass
            ``k=K`` and slice. The features are checked for it before the search runs.

    Returns:
        :class:`SearchResult` with ``scores`` ``[Nq, K]`` and ``indices`` ``[Nq, K]``, best
        first, ties by lower gallery index; with a scorer that has an uncertainty (Gaussian)
        also ``query_uncertainty`` ``[Nq]`` and ``gallery_uncertainty`` ``[Nq, K]``.

    Raises:
        TypeError: non-tensor or non-floating features, a ``scorer`` that is not a
            :class:`~textreid.retrieval.Scorer`.
        ValueError: wrong shapes or widths, empty inputs, non-finite values, ``k`` outside
            ``[1, Ng]``, a non-positive block size, an unknown backend or screen,
            ``screen="bf16"`` off the CPU or with the faiss backend; features that lack a key
            the scorer needs or whose row counts differ; ``normalize=True`` with a scorer;
            the faiss backend or ``screen="bf16"`` with a scorer other than cosine.
        ImportError: ``backend="faiss"`` without faiss installed.

    Example:
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        >>> topk_search(torch.tensor([[1.0, 0.1]]), g, 2, normalize=False).indices
        tensor([[0, 2]])
    """
    fn = _FN
    if normalize is None:
        if scorer is None:
            warn_deprecated(
                "topk_search's default normalize=False",
                since="0.2",
                removed_in="1.0",
                replacement="an explicit normalize=True (cosine, the default from 1.0, as "
                "in evaluate) or normalize=False (inner products)",
            )
        normalize = False
    if rerank is not None:
        if not (
            callable(getattr(rerank, "check", None)) and callable(getattr(rerank, "rerank", None))
        ):
            raise TypeError(
                f"{fn}: rerank must be a re-ranker with check() and rerank() methods (e.g. "
                f"TokenReranker), got {type(rerank).__name__}"
            )
        q_all = as_features(query, name="query", fn=fn)
        g_all = as_features(gallery, name="gallery", fn=fn)
        rerank.check(q_all, g_all, fn=fn)
        first = topk_search(
            query,
            gallery,
            k,
            chunk_size=chunk_size,
            query_block=query_block,
            normalize=normalize,
            backend=backend,
            screen=screen,
            check_finite=check_finite,
            scorer=scorer,
        )
        return rerank.rerank(first, q_all, g_all)
    if scorer is not None:
        check_scorer(scorer, fn)
        if normalize:
            raise ValueError(
                f"{fn}: normalize=True applies to searches without scorer=; the scorer decides "
                "how features compare (CosineScorer(normalize=...) for global features)"
            )
        if type(scorer) is CosineScorer:
            # Cosine scores take the tensor path below: bfloat16 screen, faiss, exact ties.
            normalize = scorer.normalize
            query = scorer.validate(query, "query", fn, finite=False)["global"]
            gallery = scorer.validate(gallery, "gallery", fn, finite=False)["global"]
            scorer = None
    if scorer is not None:
        return _search_with(
            scorer, query, gallery, k, chunk_size, query_block, backend, screen, check_finite
        )
    query = global_tensor(query, "query", fn)
    gallery = global_tensor(gallery, "gallery", fn)
    check_features(query, "query", fn, dims="(Nq, D)", finite=check_finite)
    check_features(gallery, "gallery", fn, dims="(Ng, D)", finite=check_finite)
    check_same_width(fn, query, "query", gallery, "gallery")
    check_positive(chunk_size, "chunk_size", fn)
    check_positive(query_block, "query_block", fn)
    check_choice(backend, "backend", fn, ("torch", "faiss"))
    _check_k(k, gallery.shape[0], fn)
    check_choice(screen, "screen", fn, ("auto", "bf16", "off"))
    if screen == "bf16" and (backend != "torch" or query.device.type != "cpu"):
        raise ValueError(
            f'{fn}: screen="bf16" runs with backend="torch" on CPU tensors, got '
            f'backend={backend!r} with query on {query.device}; use screen="auto" or "off"'
        )
    if backend == "faiss":
        return _faiss_search(query, gallery, k, chunk_size, query_block, normalize)
    dtype = compute_dtype(query, gallery)
    use_screen = screen == "bf16" or (
        screen == "auto"
        and query.device.type == "cpu"
        and dtype == torch.float32
        and query.shape[0] >= _SCREEN_MIN_QUERIES
        and native_bf16()
    )
    return _torch_search(query, gallery, k, chunk_size, query_block, normalize, use_screen)
