"""Token-level re-ranking: re-score a global top-k with FMFA's sparsified token similarity.

A global search (one vector per item) is cheap over any gallery; the token-level score of
:class:`~textreid.heads.SparseTokenSimilarity` compares every caption token with the image
patches it resembles, which costs ``L x P`` dot products per pair. :class:`TokenReranker`
spends that cost on the top ``K`` candidates of each query only, in blocks of pairs, so its
memory is bounded by the block (at most ``Nq x K`` pairs), never by the gallery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from numbers import Real
from typing import Literal

import torch
from torch import Tensor

from textreid import _token_math
from textreid._checks import (
    check_choice,
    check_finite,
    check_int,
    check_same_width,
    check_tensor,
    check_token_mask,
    check_tokens,
    require,
)
from textreid._numerics import compute_dtype
from textreid.heads.token_similarity import SparseTokenSimilarity
from textreid.retrieval.scorers import Features
from textreid.retrieval.search import SearchResult
from textreid.retrieval.topk import _ranking

__all__ = ["GalleryTokens", "TokenFusion", "TokenReranker"]

TokenFusion = Literal["sum", "token"]
"""How :class:`TokenReranker` orders the hits: ``"sum"`` (first-stage score plus the weighted
token score) or ``"token"`` (the token score alone)."""

GalleryTokens = Callable[[Tensor], Features]
"""Re-computes gallery tokens: ``fn(indices [M]) -> {"tokens": [M, P, D], "token_mask": [M, P]}``
(the mask is optional) for the given gallery indices, e.g. by encoding those images again."""


def _token_features(
    f: object, name: str, fn: str, rows: int | None, *, finite: bool
) -> tuple[Tensor, Tensor | None]:
    """``(tokens [N, T, D], token_mask [N, T] | None)`` of a features mapping."""
    if not isinstance(f, Mapping):
        raise TypeError(
            f"{fn}: {name} must be a features mapping with 'tokens' [N, T, D] (and optionally "
            f"'token_mask' [N, T]), got {type(f).__name__}"
        )
    if "tokens" not in f:
        raise ValueError(
            f"{fn}: {name} features lack 'tokens'; token re-ranking needs 'tokens' [N, T, D] "
            f"(and optionally 'token_mask'), got the keys {sorted(map(str, f))}; encode them "
            "with a model that returns tokens"
        )
    tokens = check_tokens(f["tokens"], f"{name}['tokens']", fn, dims="(N, T, D)", finite=finite)
    if rows is not None and tokens.shape[0] != rows:
        raise ValueError(
            f"{fn}: {name}['tokens'] has {tokens.shape[0]} rows but {rows} were expected "
            f"(shape {tuple(tokens.shape)})"
        )
    mask = f.get("token_mask")
    if mask is not None:
        mask = check_token_mask(mask, f"{name}['token_mask']", fn, tokens, f"{name}['tokens']")
    return tokens, mask


class TokenReranker:
    """Re-rank the top ``K`` hits of a global search by a token-level similarity.

    For query ``q`` (a caption, tokens :math:`T_q`) and each of its first ``k`` hits ``g``
    (an image, tokens :math:`P_g`), the token score is the head's
    :math:`t_{qg} = \\mathrm{maxsim\\_logsumexp}(T_q, \\mathrm{sparse\\_aggregate}(T_q, P_g))`
    (see :class:`~textreid.heads.SparseTokenSimilarity`), and the hits are re-ordered by

    .. math::
        s_{qg} = c_{qg} + w\\, t_{qg} \\quad (\\text{fusion} = \\text{"sum"}), \\qquad
        s_{qg} = t_{qg} \\quad (\\text{fusion} = \\text{"token"}),

    with :math:`c_{qg}` the first-stage score (cosine for a CLIP-style model). Ties go to
    the lower gallery index, as everywhere in :mod:`textreid.retrieval`.

    FMFA (Yin et al., arXiv 2509.13754, 2025) trains with this token similarity (its EFA loss)
    but retrieves with the global cosine only; the paper defines no re-ranking, so the fusion
    rule and its default are ours. ``"sum"`` with ``w = 1`` adds the two scores on the scale
    they have (a cosine in ``[-1, 1]``; a token score within ``log(L) +- 1/tau``, whose
    per-query offset does not change a query's order), so neither overrides the other.
    docs/retrieval.md ("Token re-ranking") reports what it does to the tiny FMFA recipe.

    For a model trained by FMFA, give the gallery the image's patch tokens without the class
    token and the query every caption position with a head built with
    ``include_padding=True``, as its loss saw them. With ``include_padding=True`` the query's
    ``"token_mask"`` is not used (every position is scored); otherwise padding positions are
    left out through it.

    Args:
        head: the token similarity (its ``temperature`` and ``threshold`` are used). Default
            ``SparseTokenSimilarity(include_padding=True)``, FMFA's setting.
        fusion: ``"sum"`` (first-stage score plus ``weight`` times the token score) or
            ``"token"`` (the token score alone).
        weight: :math:`w` of ``"sum"``, ``>= 0``.
        batch_size: query-candidate pairs scored per block; memory is about
            ``batch_size x (L x P + (L + P) x D)`` numbers, whatever the gallery size.
        check_finite: refuse NaN/inf tokens (one pass over the tokens of each block).

    Raises:
        TypeError: ``head`` is not a :class:`~textreid.heads.SparseTokenSimilarity`.
        ValueError: an unknown ``fusion``, a negative or non-finite ``weight``, a
            ``batch_size`` below 1.

    Example:
        >>> g = {"global": torch.eye(3), "tokens": torch.randn(3, 4, 8)}
        >>> q = {"global": torch.eye(3)[:2], "tokens": torch.randn(2, 5, 8)}
        >>> first = textreid.retrieval.topk_search(q["global"], g["global"], 3, normalize=False)
        >>> TokenReranker().rerank(first, q, g).indices.shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        head: SparseTokenSimilarity | None = None,
        *,
        fusion: TokenFusion = "sum",
        weight: float = 1.0,
        batch_size: int = 256,
        check_finite: bool = True,
    ) -> None:
        fn = type(self).__name__
        if head is None:
            head = SparseTokenSimilarity(include_padding=True)
        if not isinstance(head, SparseTokenSimilarity):
            raise TypeError(
                f"{fn}: head must be a SparseTokenSimilarity, got {type(head).__name__}"
            )
        check_choice(fusion, "fusion", fn, ("sum", "token"))
        if (
            isinstance(weight, bool)
            or not isinstance(weight, Real)
            or not 0.0 <= float(weight) < float("inf")
        ):
            raise ValueError(f"{fn}: weight must be a finite number >= 0, got {weight!r}")
        check_int(batch_size, "batch_size", fn, min_value=1)
        self.head: SparseTokenSimilarity = head
        self.fusion: TokenFusion = fusion
        self.weight: float = float(weight)
        self.batch_size: int = batch_size
        self.check_finite: bool = check_finite

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(head={self.head!r}, fusion={self.fusion!r}, "
            f"weight={self.weight}, batch_size={self.batch_size})"
        )

    def rerank(
        self,
        result: SearchResult,
        query: Features,
        gallery: Features | GalleryTokens,
        *,
        k: int | None = None,
    ) -> SearchResult:
        """Re-score the first ``k`` hits of every query and re-order them.

        Args:
            result: the first-stage :class:`~textreid.retrieval.SearchResult` ``[Nq, K]``
                (e.g. of :func:`~textreid.retrieval.topk_search`); its scores are the
                :math:`c_{qg}` of ``"sum"``.
            query: features of the same ``Nq`` queries with ``"tokens"`` ``[Nq, L, D]`` and
                optionally ``"token_mask"`` bool ``[Nq, L]`` (True = real token).
            gallery: stored gallery features with ``"tokens"`` ``[Ng, P, D]`` (and optionally
                ``"token_mask"`` ``[Ng, P]``), of which only the candidates' rows are read
                (a memory-mapped gallery stays on disk); or a :data:`GalleryTokens` callable
                that re-computes them for the candidates of a block, called once per block
                with the block's distinct indices in increasing order.
            k: how many of the first-stage hits to re-score (default all ``K``); the rest
                are dropped.

        Returns:
            :class:`~textreid.retrieval.SearchResult` ``[Nq, k]`` ordered by the fused
            scores, which it holds (float32, float64 for float64 inputs); ties by lower
            gallery index. The first stage's uncertainties, if any, follow their hits. Runs
            on the device of the query tokens.

        Raises:
            TypeError: a result that is not a ``SearchResult``, features that are not a
                mapping (or a callable for the gallery), non-floating tokens, non-bool masks.
            ValueError: ``k`` outside ``[1, K]``; missing ``"tokens"``; query tokens whose
                rows are not the result's ``Nq``; widths that differ; a mask whose shape does
                not match its tokens or that has a row without a real token; a hit outside
                the stored gallery; a callable returning the wrong number of rows; NaN/inf
                tokens (with ``check_finite``).
        """
        fn = f"{type(self).__name__}.rerank"
        if not isinstance(result, SearchResult):
            raise TypeError(f"{fn}: result must be a SearchResult, got {type(result).__name__}")
        scores = check_tensor(result.scores, "result.scores", fn, ndim=2, kind="float")
        idx = check_tensor(result.indices, "result.indices", fn, ndim=2, kind="int")
        if scores.shape != idx.shape:
            raise ValueError(
                f"{fn}: result.scores has shape {tuple(scores.shape)} but result.indices has "
                f"{tuple(idx.shape)}"
            )
        nq, top = idx.shape
        kk = top if k is None else k
        if isinstance(kk, bool) or not isinstance(kk, int) or not 1 <= kk <= top:
            raise ValueError(f"{fn}: k must be an int in [1, K={top}], got {k!r}")
        q_tok, q_mask, stored = self._inputs(query, gallery, fn, nq)
        if stored is not None:
            ng = stored[0].shape[0]
            bad = f"{fn}: result.indices hold hits outside the gallery of {ng} items"
            require(((idx >= 0) & (idx < ng)).all(), lambda: bad + f" ({idx.aminmax()})", bad)
        device = q_tok.device
        cand = idx[:, :kk].to(device)
        q_rows = torch.arange(nq, device=device).repeat_interleave(kk)
        g_rows = cand.reshape(-1)
        token = torch.cat(
            [
                self._block(q_tok, q_mask, q_rows[s : s + self.batch_size], gi, gallery, stored)
                for s in range(0, g_rows.shape[0], self.batch_size)
                for gi in (g_rows[s : s + self.batch_size],)
            ]
        ).view(nq, kk)
        if self.fusion == "token":
            fused = token
        else:
            first = scores[:, :kk].to(device)
            dtype = torch.promote_types(first.dtype, token.dtype)
            fused = first.to(dtype) + self.weight * token.to(dtype)
        order = _ranking(fused, cand)
        hit_u = getattr(result, "gallery_uncertainty", None)
        return SearchResult(
            fused.gather(1, order),
            cand.gather(1, order),
            getattr(result, "query_uncertainty", None),
            None if hit_u is None else hit_u[:, :kk].to(device).gather(1, order),
        )

    def check(
        self, query: Features, gallery: Features | GalleryTokens, *, fn: str | None = None
    ) -> None:
        """Refuse features :meth:`rerank` cannot read, before a first stage runs.

        Args:
            query: as for :meth:`rerank`.
            gallery: as for :meth:`rerank`.
            fn: the function called, named in errors (default ``TokenReranker.check``).

        Raises:
            TypeError: as :meth:`rerank`.
            ValueError: missing ``"tokens"``, widths that differ, masks that do not match
                their tokens or have a row without a real token, NaN/inf query tokens (with
                ``check_finite``).
        """
        self._inputs(query, gallery, fn or f"{type(self).__name__}.check", None)

    def _inputs(
        self, query: Features, gallery: Features | GalleryTokens, fn: str, nq: int | None
    ) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor | None] | None]:
        """Query tokens and the mask to use, and the stored gallery tokens (None: a callable)."""
        q_tok, q_mask = _token_features(query, "query", fn, nq, finite=self.check_finite)
        if self.head.include_padding:
            q_mask = None
        if not isinstance(gallery, Mapping):
            if not callable(gallery):
                raise TypeError(
                    f"{fn}: gallery must be a features mapping with 'tokens' or a callable "
                    f"indices -> features, got {type(gallery).__name__}"
                )
            return q_tok, q_mask, None
        stored = _token_features(gallery, "gallery", fn, None, finite=False)
        check_same_width(fn, q_tok, "query['tokens']", stored[0], "gallery['tokens']")
        return q_tok, q_mask, stored

    def _block(
        self,
        q_tok: Tensor,
        q_mask: Tensor | None,
        q_rows: Tensor,
        g_rows: Tensor,
        gallery: Features | GalleryTokens,
        stored: tuple[Tensor, Tensor | None] | None,
    ) -> Tensor:
        """Token scores ``[M]`` of the pairs ``(q_rows[m], g_rows[m])``."""
        fn = f"{type(self).__name__}.rerank"
        if stored is not None:
            g_tok, g_mask = stored
            at = g_rows.to(g_tok.device)
            g_tok = g_tok[at]
            g_mask = None if g_mask is None else g_mask[at]
        else:
            assert callable(gallery)
            # Captions of one identity share candidates: each distinct item is computed once.
            uniq, inverse = torch.unique(g_rows, return_inverse=True)
            g_tok, g_mask = _token_features(
                gallery(uniq), "gallery(indices)", fn, uniq.shape[0], finite=False
            )
            check_same_width(fn, q_tok, "query['tokens']", g_tok, "gallery(indices)['tokens']")
            at = inverse.to(g_tok.device)
            g_tok = g_tok[at]
            g_mask = None if g_mask is None else g_mask[at]
        device = q_tok.device
        g_tok = g_tok.to(device)
        g_mask = None if g_mask is None else g_mask.to(device)
        if self.check_finite:
            check_finite(g_tok, "gallery['tokens'] (of the candidates)", fn)
        dtype = compute_dtype(q_tok, g_tok)
        t = q_tok[q_rows].to(dtype)
        tm = None if q_mask is None else q_mask[q_rows]
        return _token_math.sparse_token_score(
            g_tok.to(dtype), t, g_mask, tm, self.head.threshold, self.head.temperature
        )
