"""Recall@K, mAP and mINP by counting, at any gallery size, without sorting the gallery.

The rank of a positive gallery item ``p`` for a query is

.. math::

    r(p) = 1 + \\#\\{g : s_g > s_p\\} + \\#\\{g : s_g = s_p,\\ g < p\\},

its position in a *stable* descending sort (lower gallery index first among equal scores).
It is computed by streaming the scores over query blocks and gallery chunks: the positives of
each query are sorted once (only they are), every gallery item is located among them with a
binary search, and a per-query histogram of those locations gives every positive's rank. Memory
is bounded by the chunk, plus one index per gallery item and the positives of a query block.

With ``R`` positives of ranks :math:`r_1 < \\dots < r_R`:

.. math::

    \\mathrm{AP} = \\frac{1}{R}\\sum_{j=1}^{R} \\frac{j}{r_j}, \\qquad
    \\mathrm{INP} = \\frac{R}{r_R}, \\qquad \\mathrm{hit@K} = [r_1 \\le K],

averaged over the queries that have a positive and reported in percent, as papers do
(R@K = CMC at K). Every gallery item with the query's id is a positive (TIPR has no camera
filter).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from textreid._checks import (
    check_features,
    check_ids,
    check_positive,
    check_same_width,
)
from textreid._deprecation import warn_deprecated
from textreid._numerics import compute_dtype
from textreid.retrieval.scorers import (
    CosineScorer,
    Features,
    Scorer,
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
    _pair_scores,
    _row_norms,
    _rows,
    _score_chunks,
    _scores,
)

__all__ = ["RetrievalMetrics", "evaluate"]


@dataclass(frozen=True)
class RetrievalMetrics:
    """Retrieval metrics in percent, as papers report them.

    Queries without any positive in the gallery are counted in
    ``num_queries_without_positive`` and left out of every average (as torchreid does, but
    reported instead of asserted); if no query has a positive, every metric is 0.

    Attributes:
        recall: ``{K: R@K}``, the percentage of queries with a positive among the top K.
        mAP: mean average precision.
        mINP: mean inverse negative penalty (``R / rank of the last positive``; Ye et al.,
            "Deep Learning for Person Re-identification: A Survey and Outlook", TPAMI 2021).
        num_queries: all queries, with or without a positive.
        num_queries_without_positive: queries whose id is absent from the gallery.
        first_positive_ranks: ``[Nq]`` int64 1-based rank of each query's best positive
            (0 for a query without one), when requested with ``return_ranks=True``.
    """

    recall: dict[int, float]
    mAP: float
    mINP: float
    num_queries: int
    num_queries_without_positive: int
    first_positive_ranks: Tensor | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, float | int]:
        """``{"R1": .., "R5": .., "R10": .., "mAP": .., "mINP": .., "num_queries": ..,
        "num_queries_without_positive": ..}`` (plain Python numbers, JSON-ready)."""
        out: dict[str, float | int] = {f"R{k}": v for k, v in self.recall.items()}
        out.update(
            mAP=self.mAP,
            mINP=self.mINP,
            num_queries=self.num_queries,
            num_queries_without_positive=self.num_queries_without_positive,
        )
        return out

    def format_table(self, name: str = "t2i", digits: int = 3) -> str:
        """A table like the papers' (and IRRA's log): ``task | R1 | R5 | R10 | mAP | mINP``."""
        head = ["task", *(f"R{k}" for k in self.recall), "mAP", "mINP"]
        vals = [*self.recall.values(), self.mAP, self.mINP]
        row = [name, *(f"{v:.{digits}f}" for v in vals)]
        widths = [max(len(h), len(r)) for h, r in zip(head, row)]
        line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

        def fmt(cells: list[str]) -> str:
            return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"

        return "\n".join([line, fmt(head), line, fmt(row), line])


def _renamed(
    fn: str,
    old: str,
    old_value: Tensor | Features | None,
    new: str,
    value: Tensor | Features | None,
) -> Tensor | Features | None:
    """The value of an argument passed under its new or (warned) deprecated name."""
    if old_value is None:
        return value
    if value is not None:
        raise TypeError(f"{fn}: got both {new}= and its deprecated name {old}=; pass {new}= only")
    warn_deprecated(
        f"{fn}({old}=...)",
        since="0.2",
        removed_in="1.0",
        replacement=f"{fn}({new}=...)",
        stacklevel=4,
    )
    return old_value


def _check_ks(ks: Iterable[int], fn: str) -> tuple[int, ...]:
    out = tuple(ks)
    if not out or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in out):
        raise ValueError(f"{fn}: ks must be a non-empty sequence of positive ints, got {ks!r}")
    return tuple(sorted(set(out)))


def _rank_stats(ranks: Tensor, num_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """AP, INP and first-positive rank of each query from its positives' ranks ``[B, P]``
    (ascending, padding past ``num_pos``); 0 for a query without positives."""
    offs = torch.arange(ranks.shape[1], device=ranks.device)
    valid = offs < num_pos.unsqueeze(1)
    has = num_pos > 0
    ap = ((offs + 1) / ranks.to(torch.float64) * valid).sum(1) / num_pos.clamp(min=1)
    last = ranks.gather(1, (num_pos - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    inp = torch.where(has, num_pos / last.to(torch.float64), 0.0)
    first = torch.where(has, ranks[:, 0], 0)
    return ap, inp, first


def _metrics(
    first: Tensor,
    ap: Tensor,
    inp: Tensor,
    num_pos: Tensor,
    ks: tuple[int, ...],
    first_positive_ranks: Tensor | None,
) -> RetrievalMetrics:
    """The averages over queries with a positive (the others are counted apart)."""
    nq = first.shape[0]
    has_pos = num_pos > 0
    n_valid = int(has_pos.sum())
    denom = max(n_valid, 1)
    recall = {k: 100.0 * float(((first <= k) & has_pos).sum()) / denom for k in ks}
    return RetrievalMetrics(
        recall=recall,
        mAP=100.0 * float(ap.sum()) / denom,
        mINP=100.0 * float(inp.sum()) / denom,
        num_queries=nq,
        num_queries_without_positive=nq - n_valid,
        first_positive_ranks=first_positive_ranks,
    )


_COMPARE_MAX_POSITIVES = 8
"""Up to this many positives per query, count by direct comparison of each positive with the
whole score block (two vector passes per positive); beyond it, by binary search and a
histogram over the negatives (cost logarithmic in the positives)."""


def _ahead_compare(pos_scores: Tensor, pos_idx: Tensor, start: int, scores: Tensor) -> Tensor:
    """Items of one chunk ahead of each positive in the stable order, ``[B, P]``.

    Every item of the chunk is compared with every positive, positives included: item ``g``
    is ahead of positive ``(t, i)`` iff ``s_g > t`` or ``s_g = t`` and ``g < i``. The block
    must hold each positive's own score at its column (the caller scatters it there if it
    was computed apart), so that a positive never counts itself and the order is total.

    Per positive, ``sign(s - t)`` summed gives (above - below) and its absolute values summed
    give (above + below): four float passes that vectorise on every CPU kind, where bool
    reductions do not on AVX2 and a bool-to-int sum costs a conversion pass (measured 2.5x
    slower). The sums are integers, exact in the float accumulator. Ties with another item
    (an item equal to the positive's score besides the positive itself) are rare and counted
    exactly on their rows only.
    """
    c = scores.shape[1]
    out = torch.empty(pos_scores.shape, dtype=torch.int64, device=scores.device)
    tied = torch.empty(pos_scores.shape, dtype=torch.bool, device=scores.device)
    own = (pos_idx >= start) & (pos_idx < start + c)
    # Integer sums stay exact in float32 below 2**24 terms.
    acc = scores.dtype if c < 2**24 else torch.float64
    sign = torch.empty_like(scores)
    for j in range(pos_scores.shape[1]):
        torch.sub(scores, pos_scores[:, j : j + 1], out=sign).sign_()
        diff = sign.sum(1, dtype=acc)
        apart = sign.abs_().sum(1, dtype=acc)
        out[:, j] = ((diff + apart) / 2).round_().to(torch.int64)
        tied[:, j] = (c - apart).round_() > own[:, j]
    rows, js = tied.nonzero(as_tuple=True)
    if rows.numel():
        # Recounted by comparisons (also right where flushed denormals made a difference 0).
        cols = torch.arange(start, start + c, device=scores.device)
        sub, t = scores[rows], pos_scores[rows, js].unsqueeze(1)
        before = (sub == t) & (cols < pos_idx[rows, js].unsqueeze(1))
        out[rows, js] = (sub > t).sum(1) + before.sum(1)
    return out


def _neg_ahead_histogram(
    neg_sorted: Tensor,
    pos_key: Tensor,
    limit: Tensor,
    stride: int,
    start: int,
    scores: Tensor,
    is_neg: Tensor,
) -> Tensor:
    """Negatives of one chunk ahead of each positive, ``[B, P]``, by binary search.

    A negative ``g`` is ahead of the j-th positive (stable order) iff fewer than ``j + 1``
    positives are ahead of ``g``; a histogram of "positives ahead of g" over the negatives,
    summed cumulatively, counts them for every j at once.
    """
    neg = -scores
    ahead = torch.searchsorted(neg_sorted, neg, side="left").clamp_(max=limit)
    upto = torch.searchsorted(neg_sorted, neg, side="right").clamp_(max=limit)
    tied = (upto > ahead) & is_neg
    if bool(tied.any()):
        cols = torch.arange(start, start + scores.shape[1], device=scores.device)
        by_key = torch.searchsorted(pos_key, ahead * stride + cols).clamp_(max=limit)
        ahead = torch.where(tied, by_key, ahead)
    hist = torch.zeros(
        neg_sorted.shape[0], neg_sorted.shape[1] + 1, dtype=torch.int64, device=scores.device
    )
    hist.scatter_add_(1, ahead, is_neg.to(torch.int64))
    return hist.cumsum(1)[:, :-1]


def _place_positives(pos_scores: Tensor, pos_idx: Tensor, start: int, scores: Tensor) -> None:
    """Write each positive's score into its column of the chunk (in place), so that the pair
    has one score wherever it is compared (a pair scored apart can differ in the last bit)."""
    c = scores.shape[1]
    rows, js = ((pos_idx >= start) & (pos_idx < start + c)).nonzero(as_tuple=True)
    scores[rows, pos_idx[rows, js] - start] = pos_scores[rows, js]


def _positive_ranks(
    pos_scores: Tensor,
    pos_idx: Tensor,
    num_pos: Tensor,
    chunks: Iterable[tuple[int, Tensor]],
    query_pids: Tensor,
    gallery_pids: Tensor,
    *,
    placed: bool,
) -> Tensor:
    """Stable-sort ranks of every positive, ``[B, P]`` ascending (padding past ``num_pos``).

    ``pos_scores``/``pos_idx`` ``[B, P]`` are the positives of each query in ascending gallery
    index, padded with the lowest score and an index past the gallery; ``chunks`` yields
    ``(start, scores[B, C])``. ``placed`` says the chunks already hold ``pos_scores`` at the
    positives' columns (scores read off the blocks); otherwise they are written there, so
    the chunks must be the caller's own buffers.
    """
    num_gallery = gallery_pids.shape[0]
    p = pos_scores.shape[1]
    if p <= _COMPARE_MAX_POSITIVES:
        ahead = torch.zeros(pos_scores.shape, dtype=torch.int64, device=pos_scores.device)
        for start, scores in chunks:
            if not placed:
                _place_positives(pos_scores, pos_idx, start, scores)
            ahead += _ahead_compare(pos_scores, pos_idx, start, scores)
        # Every item ahead of a positive is counted, so ranks are distinct; padding (lowest
        # score, index past the gallery) ranks after every real positive.
        return torch.sort(ahead, dim=1).values + 1
    # Stable sort keeps ascending gallery index among equal scores: the tie rule.
    order = torch.sort(pos_scores, dim=1, descending=True, stable=True).indices
    scores_sorted = pos_scores.gather(1, order)
    idx_sorted = pos_idx.gather(1, order)
    neg_sorted = -scores_sorted  # ascending, for searchsorted
    # Start of each positive's run of equal scores; (run start, index) is then an integer key
    # increasing along each row that breaks score ties by gallery index.
    run_start = torch.searchsorted(neg_sorted, neg_sorted, side="left")
    stride = num_gallery + 1
    pos_key = run_start * stride + idx_sorted
    limit = num_pos.unsqueeze(1)
    neg_ahead = torch.zeros_like(idx_sorted)
    for start, scores in chunks:
        is_neg = gallery_pids[start : start + scores.shape[1]] != query_pids.unsqueeze(1)
        neg_ahead += _neg_ahead_histogram(neg_sorted, pos_key, limit, stride, start, scores, is_neg)
    return neg_ahead + torch.arange(1, p + 1, device=pos_scores.device)


def _scorer_blocks(
    scorer: Scorer,
    query: Features,
    gallery: Features,
    q0: int,
    b: int,
    rows: Tensor,
    cols: Tensor,
    chunk_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Iterable[tuple[int, Tensor]]]:
    """For queries ``q0:q0 + b`` through ``scorer``: the scores of the pairs ``(rows[m],
    cols[m])`` (block-relative query, gallery index) and the stream of score chunks."""
    q_rows = scorer.prepare(features_to(slice_rows(query, q0, q0 + b), device), "query")
    pairs = torch.empty(rows.shape[0], dtype=dtype, device=device)
    for s in range(0, rows.shape[0], chunk_size):
        g = features_to(take_rows(gallery, cols[s : s + chunk_size]), device)
        q = take_rows(q_rows, rows[s : s + chunk_size])
        pairs[s : s + g[next(iter(g))].shape[0]] = scorer.score_pairs(
            q, scorer.prepare(g, "gallery")
        ).to(dtype)

    def chunks() -> Iterable[tuple[int, Tensor]]:
        for c0 in range(0, num_rows(gallery), chunk_size):
            chunk = features_to(slice_rows(gallery, c0, c0 + chunk_size), device)
            yield c0, scorer.score(q_rows, scorer.prepare(chunk, "gallery")).to(dtype)

    return pairs, chunks()


def evaluate(
    query: Tensor | Features | None = None,
    gallery: Tensor | Features | None = None,
    *,
    scores: Tensor | None = None,
    query_pids: Tensor,
    gallery_pids: Tensor,
    ks: Iterable[int] = (1, 5, 10),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    query_block: int = DEFAULT_QUERY_BLOCK,
    device: torch.device | str | None = None,
    normalize: bool = True,
    return_ranks: bool = False,
    check_finite: bool = True,
    scorer: Scorer | None = None,
    query_feats: Tensor | Features | None = None,
    gallery_feats: Tensor | Features | None = None,
) -> RetrievalMetrics:
    """R@K, mAP and mINP of a retrieval, from features or from a score matrix.

    Features are compared by cosine similarity (IRRA's evaluation), or by ``scorer`` for
    methods that score otherwise (Gaussian distances, part similarities); every scorer is
    streamed over query blocks and gallery chunks.

    Ranks follow a stable descending sort: among equal scores the lower gallery index ranks
    first (see the module docstring for the counting method; no sort of the gallery happens).
    On tie-free scores the numbers equal IRRA's ``rank`` (Jiang & Ye, "Cross-Modal Implicit
    Relation Reasoning and Aligning for Text-to-Image Person Retrieval", CVPR 2023,
    arXiv:2303.12501), which reads the same quantities off a full ``argsort``.

    Argument names follow one rule across :func:`evaluate` and
    :func:`~textreid.retrieval.topk_search`: the features are ``query`` and ``gallery``,
    and ``normalize=True`` (cosine) is the default.

    Args:
        query: ``[Nq, D]`` query features (e.g. text embeddings), or a features mapping
            (:data:`~textreid.retrieval.Features`; a tensor means ``{"global": ..}``).
        gallery: ``[Ng, D]`` gallery features (e.g. image embeddings), or a mapping.
        scores: ``[Nq, Ng]`` precomputed scores, higher = more similar; give either this or
            both feature tensors.
        query_pids: ``[Nq]`` integer identity of each query.
        gallery_pids: ``[Ng]`` integer identity of each gallery item; every item with the
            query's id is a positive.
        ks: the K of R@K (any positive ints; K beyond the gallery counts every positive).
        chunk_size: gallery rows per block.
        query_block: query rows per block (a block holds ``query_block x chunk_size`` scores
            plus as many int64 positions).
        device: where to compute; default the device of the features (or ``scores``). Blocks
            of inputs stored elsewhere are moved one at a time.
        normalize: with features, L2-normalise rows first (cosine, IRRA's evaluation); with
            ``False`` scores are inner products. Ignored with ``scores`` and with ``scorer``
            (a :class:`~textreid.retrieval.CosineScorer` carries its own).
        return_ranks: also return each query's first-positive rank.
        check_finite: raise on NaN/inf inputs (one pass over them).
        scorer: how features compare (:mod:`textreid.retrieval.scorers`); default the
            cosine (or inner product) of the global features. A cosine scorer gives exactly
            the numbers of a plain call.
        query_feats: deprecated name of ``query`` (warns; removed in 1.0).
        gallery_feats: deprecated name of ``gallery`` (warns; removed in 1.0).

    Returns:
        :class:`RetrievalMetrics` (percent values).

    Raises:
        TypeError: non-tensor inputs, non-floating features/scores, non-integer pids, a
            ``scorer`` that is not a :class:`~textreid.retrieval.Scorer`.
        ValueError: neither or both of features and ``scores``, wrong shapes or widths, pid
            lengths that do not match, non-finite values, bad ``ks`` or block sizes; features
            that lack a key the scorer needs; ``scorer`` with ``scores``.

    Notes:
        Differences from the reference code: IRRA orders ties by whatever the unstable
        ``torch.argsort`` returns (device-dependent); here ties have a fixed rule. IRRA crashes
        on a query without a positive (and counts it as a miss in R@K); here it is left out of
        every average and counted in ``num_queries_without_positive``. The score of a
        (query, positive) pair is computed by a dot product of the pair while other scores
        come from the chunked matmul; both round the same exact value to float32, so they can
        differ in the last bit, which matters only for exact ties between a positive and a
        negative. Pass ``scores=`` for bit-exact tie handling.

    Example:
        >>> s = torch.tensor([[0.9, 0.8, 0.3, 0.1], [0.5, 0.2, 0.7, 0.6]])
        >>> m = evaluate(scores=s, query_pids=torch.tensor([1, 2]),
        ...              gallery_pids=torch.tensor([1, 2, 1, 3]), ks=(1, 4))
        >>> dict(m.recall), round(m.mAP, 3)
        ({1: 50.0, 4: 100.0}, 54.167)
    """
    fn = "evaluate"
    query_feats = _renamed(fn, "query_feats", query_feats, "query", query)
    gallery_feats = _renamed(fn, "gallery_feats", gallery_feats, "gallery", gallery)
    use_scores = scores is not None
    if use_scores == (query_feats is not None or gallery_feats is not None):
        raise ValueError(f"{fn}: pass either scores=[Nq, Ng] or both query_feats and gallery_feats")
    if scorer is not None:
        check_scorer(scorer, fn)
        if use_scores:
            raise ValueError(f"{fn}: scorer= scores features; it cannot be used with scores=")
        if type(scorer) is CosineScorer and query_feats is not None and gallery_feats is not None:
            # Cosine takes the tensor path below, exactly as a plain call.
            normalize = scorer.normalize
            query_feats = scorer.validate(
                query_feats, "query", fn, finite=False, name="query_feats"
            )["global"]
            gallery_feats = scorer.validate(
                gallery_feats, "gallery", fn, finite=False, name="gallery_feats"
            )["global"]
            scorer = None
    qf = gf = None
    if use_scores:
        s = check_features(scores, "scores", fn, dims="(Nq, Ng)", finite=check_finite)
        nq, ng = s.shape
        base_device = s.device
        dtype = compute_dtype(s)
    elif query_feats is None or gallery_feats is None:
        raise ValueError(f"{fn}: query_feats and gallery_feats must be given together")
    elif scorer is not None:
        qf = scorer.validate(query_feats, "query", fn, finite=check_finite, name="query_feats")
        gf = scorer.validate(
            gallery_feats, "gallery", fn, finite=check_finite, name="gallery_feats"
        )
        scorer.check_pair(qf, gf, fn)
        qf = {key: qf[key] for key in scorer.required_keys("query")}
        gf = {key: gf[key] for key in scorer.required_keys("gallery")}
        nq, ng = num_rows(qf), num_rows(gf)
        base_device = next(iter(qf.values())).device
        dtype = compute_dtype(*qf.values(), *gf.values())
    else:
        q = check_features(
            global_tensor(query_feats, "query_feats", fn),
            "query_feats",
            fn,
            dims="(Nq, D)",
            finite=check_finite,
        )
        g = check_features(
            global_tensor(gallery_feats, "gallery_feats", fn),
            "gallery_feats",
            fn,
            dims="(Ng, D)",
            finite=check_finite,
        )
        check_same_width(fn, q, "query_feats", g, "gallery_feats")
        nq, ng = q.shape[0], g.shape[0]
        base_device = q.device
        dtype = compute_dtype(q, g)
    rows_name = "scores" if use_scores else "query_feats"
    qp = check_ids(query_pids, "query_pids", fn, nq, rows_name)
    gp = check_ids(
        gallery_pids, "gallery_pids", fn, ng, "scores columns" if use_scores else "gallery_feats"
    )
    ks_t = _check_ks(ks, fn)
    check_positive(chunk_size, "chunk_size", fn)
    check_positive(query_block, "query_block", fn)
    dev = torch.device(device) if device is not None else base_device

    qp, gp = qp.to(dev), gp.to(dev)
    # Gallery grouped by id (stable, so each id's items stay in index order).
    by_pid = torch.sort(gp, stable=True)
    q_norms = g_norms = None
    if not use_scores and scorer is None and normalize:
        q_norms = _row_norms(q, dtype, dev, query_block, fn, "query_feats")
        g_norms = _row_norms(g, dtype, dev, chunk_size, fn, "gallery_feats")
    # A gallery that fits one chunk is prepared (moved, converted, normalised) once.
    g_rows = None
    if not use_scores and scorer is None and ng <= chunk_size:
        g_rows = _rows(g, slice(None), g_norms, dtype, dev)

    first = torch.zeros(nq, dtype=torch.int64, device=dev)
    ap = torch.zeros(nq, dtype=torch.float64, device=dev)
    inp = torch.zeros(nq, dtype=torch.float64, device=dev)
    num_pos_all = torch.zeros(nq, dtype=torch.int64, device=dev)
    for q0 in range(0, nq, query_block):
        bq = qp[q0 : q0 + query_block]
        b = bq.shape[0]
        lo = torch.searchsorted(by_pid.values, bq, side="left")
        num_pos = torch.searchsorted(by_pid.values, bq, side="right") - lo
        p = max(int(num_pos.max()), 1)
        offs = torch.arange(p, device=dev)
        valid = offs < num_pos.unsqueeze(1)
        pos_idx = by_pid.indices[(lo.unsqueeze(1) + offs).clamp_(max=ng - 1)]
        rows, cols = valid.nonzero(as_tuple=True)
        pos_scores = torch.full((b, p), torch.finfo(dtype).min, dtype=dtype, device=dev)
        placed = False
        if use_scores:
            sq = s[q0 : q0 + b]
            pos_scores[rows, cols] = sq[rows.to(s.device), pos_idx[rows, cols].to(s.device)].to(
                dev, dtype
            )
            chunks: Iterable[tuple[int, Tensor]] = (
                (c0, sq[:, c0 : c0 + chunk_size].to(dev, dtype)) for c0 in range(0, ng, chunk_size)
            )
            placed = True  # the user's scores: read, never written
        elif scorer is not None and qf is not None and gf is not None:
            pos_scores[rows, cols], chunks = _scorer_blocks(
                scorer, qf, gf, q0, b, rows, pos_idx[rows, cols], chunk_size, dev, dtype
            )
        elif g_rows is not None:
            # The whole gallery in one block: one matmul scores every pair once, and the
            # positives' scores are read off it.
            block = _scores(_rows(q, slice(q0, q0 + b), q_norms, dtype, dev), g_rows)
            pos_scores[rows, cols] = block[rows, pos_idx[rows, cols]]
            chunks, placed = [(0, block)], True
        else:
            q_rows = _rows(q, slice(q0, q0 + b), q_norms, dtype, dev)
            pos_scores[rows, cols] = _pair_scores(
                q_rows, g, g_norms, rows, pos_idx[rows, cols], chunk_size
            )
            chunks = _score_chunks(q_rows, g, g_norms, chunk_size)
        # Padding sorts after every real positive (lowest score, index past the gallery).
        pos_idx = torch.where(valid, pos_idx, ng)
        ranks = _positive_ranks(pos_scores, pos_idx, num_pos, chunks, bq, gp, placed=placed)
        ap[q0 : q0 + b], inp[q0 : q0 + b], first[q0 : q0 + b] = _rank_stats(ranks, num_pos)
        num_pos_all[q0 : q0 + b] = num_pos

    return _metrics(first, ap, inp, num_pos_all, ks_t, first if return_ranks else None)
