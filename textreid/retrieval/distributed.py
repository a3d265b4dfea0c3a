"""Exact retrieval over a gallery sharded across the processes of a ``torch.distributed`` group.

Every rank holds the same queries and its own contiguous shard of the gallery: rows
``gallery_offset : gallery_offset + len(shard)`` of one global gallery. The shards of the
ranks tile it without overlap (in rank order unless offsets are given); a shard may be empty
or smaller than ``k``.

- :func:`sharded_topk_search` searches the local shard (:func:`~textreid.retrieval.topk_search`),
  gathers every rank's ``k`` best and keeps the ``k`` best of those, ties by lower *global*
  index: the hits a single process would return for the whole gallery.
- :func:`sharded_evaluate` counts ranks: a positive's rank is 1 + the positives ahead of it +
  the negatives ahead of it, and the negatives ahead are a sum over shards. The positives of
  each query are gathered from every rank (a handful per query), each rank counts the
  negatives of its shard ahead of each of them, and one ``all_reduce`` adds the counts. The
  metrics are those of :func:`~textreid.retrieval.evaluate` on the whole gallery wherever
  both compute the same scores (see :func:`sharded_evaluate`).

With ``query_sharded=True`` each rank holds its own queries instead: they are taken one rank
after the other (broadcast, then as above), and each rank gets its own queries' hits.

Only queries, hits, the positives' scores and counts cross the network, never the gallery. Collectives run on the device the
group's backend needs (the current CUDA device for NCCL, the CPU otherwise); results come
back on the query's device, the same on every rank. Every rank checks its inputs before the
first collective and the ranks agree on the outcome, so bad input on one rank is an error on
all of them rather than a hang.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from textreid._checks import check_ids, check_positive
from textreid._numerics import compute_dtype
from textreid.retrieval.metrics import (
    RetrievalMetrics,
    _check_ks,
    _metrics,
    _neg_ahead_histogram,
    _rank_stats,
)
from textreid.retrieval.scorers import (
    CosineScorer,
    Features,
    Scorer,
    as_features,
    check_scorer,
    features_to,
    num_rows,
    slice_rows,
    take_rows,
)
from textreid.retrieval.scores import DEFAULT_CHUNK_SIZE, DEFAULT_QUERY_BLOCK, cosine_scores
from textreid.retrieval.search import Screen, SearchResult, topk_search

__all__ = ["sharded_evaluate", "sharded_topk_search"]

_SCORE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_BAD = -1  # a rank's status code: its own inputs were refused


class _Group:
    """The ranks of ``group`` (or of no group: one rank, collectives are identities)."""

    def __init__(self, group: dist.ProcessGroup | None, fn: str) -> None:
        self.group = group
        if group is None and not (dist.is_available() and dist.is_initialized()):
            self.size, self.rank, self.device = 1, 0, torch.device("cpu")
            return
        if group is not None and not isinstance(group, dist.ProcessGroup):
            raise TypeError(f"{fn}: group must be a torch.distributed ProcessGroup or None, got "
                            f"{type(group).__name__}")  # fmt: skip
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        # NCCL moves CUDA tensors only; gloo (and MPI) CPU tensors.
        nccl = dist.get_backend(group) == "nccl"
        self.device = (
            torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        )

    def all_gather(self, t: Tensor) -> list[Tensor]:
        """Every rank's ``t`` (same shape and dtype on each), on the caller's device."""
        if self.size == 1:
            return [t]
        x = t.to(self.device).contiguous()
        out = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(out, x, group=self.group)
        return [o.to(t.device) for o in out]

    def broadcast(self, t: Tensor, src: int) -> None:
        """Fill ``t`` (on :attr:`device`) with rank ``src``'s, in place."""
        if self.size > 1:
            dist.broadcast(t, group=self.group, group_src=src)

    def all_reduce(self, t: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
        if self.size == 1:
            return t
        x = t.to(self.device).contiguous()
        dist.all_reduce(x, op=op, group=self.group)
        return x.to(t.device)

    def agree(self, error: Exception | None, row: list[int], fn: str) -> Tensor:
        """All ranks' ``row`` of small integers ``[W, len(row)]``; raise on every rank if one
        rank's inputs were refused (its own error there, a pointer to it elsewhere)."""
        mine = torch.tensor([_BAD if error is not None else 0, *row], dtype=torch.int64)
        table = torch.stack(self.all_gather(mine))
        if error is not None:
            if str(error).startswith(fn) or self.size == 1:
                raise error
            # An error of the local search names topk_search; say who called it, and where.
            raise type(error)(f"{fn}: on rank {self.rank}, {error}") from error
        bad = [r for r in range(self.size) if int(table[r, 0]) == _BAD]
        if bad:
            raise ValueError(
                f"{fn}: the inputs of rank(s) {bad} of the process group were refused (their "
                "error says why); every rank stops"
            )
        return table[:, 1:]


def _signature(f: Features) -> int:
    """A number equal on two ranks when their features have the same names, dtypes and row
    shapes (only the row counts may differ between shards)."""
    text = ";".join(f"{k}:{t.dtype}:{tuple(t.shape[1:])}" for k, t in sorted(f.items()))
    return zlib.crc32(text.encode())


def _offsets(table: Tensor, n_col: int, off_col: int, fn: str) -> tuple[list[int], int]:
    """Each rank's first global gallery row and the global gallery size.

    Without offsets (all ``-1``) the shards follow each other in rank order; with them, the
    non-empty shards must tile ``[0, Ng)``.
    """
    sizes = [int(v) for v in table[:, n_col]]
    given = [int(v) for v in table[:, off_col]]
    total = sum(sizes)
    if all(o == -1 for o in given):
        starts = [sum(sizes[:r]) for r in range(len(sizes))]
        return starts, total
    if any(o == -1 for o in given):
        missing = [r for r, o in enumerate(given) if o == -1]
        raise ValueError(
            f"{fn}: gallery_offset is given on some ranks but not on rank(s) {missing}; give it "
            "on every rank or on none (shards then follow each other in rank order)"
        )
    spans = sorted((o, n, r) for r, (o, n) in enumerate(zip(given, sizes, strict=True)) if n)
    end = 0
    for o, n, r in spans:
        if o != end:
            raise ValueError(
                f"{fn}: the gallery shards must tile rows [0, {total}) without gaps or overlap, "
                f"but rank {r}'s shard starts at gallery_offset={o} where the shards before it "
                f"end at {end}"
            )
        end += n
    return given, total


def _check_offset(offset: object, fn: str) -> int:
    if offset is None:
        return -1
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"{fn}: gallery_offset must be a non-negative int or None, got {offset!r}")
    return offset


def _shard_rows(gallery: Tensor | Features, name: str, fn: str) -> tuple[dict[str, Tensor], int]:
    f = as_features(gallery, name=name, fn=fn)
    return f, num_rows(f, name=name, fn=fn)


def _query_rounds(
    g: _Group, query: Tensor | Features, pids: Tensor | None, name: str, fn: str
) -> Iterator[tuple[int, dict[str, Tensor], Tensor | None]]:
    """Each rank's queries (and their ids) in turn, broadcast to every rank: ``(rank,
    features, pids)``; ranks without queries are skipped."""
    error: Exception | None = None
    n = sig = 0
    f: dict[str, Tensor] = {}
    try:
        f = as_features(query, name=name, fn=fn)
        n = num_rows(f, name=name, fn=fn)
        if pids is not None:
            if n:
                check_ids(pids, "query_pids", fn, n, name)
            elif not isinstance(pids, Tensor) or pids.shape != (0,):
                raise ValueError(f"{fn}: query_pids must be an empty [0] tensor for no queries, "
                                 f"got {pids!r}")  # fmt: skip
        sig = _signature(f)
    except (TypeError, ValueError) as e:
        error = e
    table = g.agree(error, [n, sig], fn)
    _same_on_all(table, [(1, f"feature names, dtypes and row shapes of {name}")], fn)
    if int(table[:, 0].sum()) == 0:
        raise ValueError(f"{fn}: no rank has queries")
    device = next(iter(f.values())).device
    for r in range(g.size):
        rows = int(table[r, 0])
        if not rows:
            continue
        if r == g.rank:
            mine = {key: t.to(g.device).contiguous() for key, t in f.items()}
            ids = None if pids is None else pids.to(g.device, torch.int64)
        else:
            mine = {
                key: torch.empty((rows, *t.shape[1:]), dtype=t.dtype, device=g.device)
                for key, t in f.items()
            }
            ids = None if pids is None else torch.empty(rows, dtype=torch.int64, device=g.device)
        for key in sorted(mine):
            g.broadcast(mine[key], r)
        if ids is not None:
            g.broadcast(ids, r)
        yield (
            r,
            {key: t.to(device) for key, t in mine.items()},
            None if ids is None else ids.to(device),
        )


def _same_on_all(table: Tensor, columns: list[tuple[int, str]], fn: str) -> None:
    """Refuse (on every rank) a column of the agreed table that differs between ranks."""
    for col, what in columns:
        values = [int(v) for v in table[:, col]]
        if len(set(values)) > 1:
            raise ValueError(
                f"{fn}: {what} must be the same on every rank, but rank(s) "
                f"{[r for r, v in enumerate(values) if v != values[0]]} differ from rank 0"
            )


def _order(scores: Tensor, indices: Tensor) -> Tensor:
    """Column order putting each row best first: higher score, then lower index."""
    by_index = torch.sort(indices, dim=1, stable=True).indices
    by_score = torch.sort(scores.gather(1, by_index), dim=1, descending=True, stable=True).indices
    return by_index.gather(1, by_score)


def sharded_topk_search(
    query: Tensor | Features,
    gallery_shard: Tensor | Features,
    k: int,
    *,
    gallery_offset: int | None = None,
    group: dist.ProcessGroup | None = None,
    normalize: bool = True,
    scorer: Scorer | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    query_block: int = DEFAULT_QUERY_BLOCK,
    screen: Screen = "auto",
    check_finite: bool = True,
    query_sharded: bool = False,
) -> SearchResult:
    """Exact top-``k`` over a gallery sharded across the ranks of a process group.

    Call it on every rank of ``group`` with the same ``query`` and ``k`` and the rank's own
    gallery shard. Each rank searches its shard with
    :func:`~textreid.retrieval.topk_search` (up to ``k`` hits; fewer for a smaller shard,
    none for an empty one), the hits are gathered, and every rank keeps the ``k`` best, ties
    by lower global index. Outside a process group it is :func:`topk_search` on the shard.

    The hits equal a single process's search of the whole gallery. The scores are the local
    searches' scores: bit for bit a single process's where a pair's score does not depend on
    which rows share its block, i.e. when every shard but the last is a whole number of
    ``chunk_size`` rows (the blocks are then the same) or the arithmetic is exact; otherwise
    they can differ in the last bit, as they do between two chunk sizes in one process.

    Args:
        query: ``[Nq, D]`` query features (or a features mapping), identical on every rank.
        gallery_shard: ``[Ng_r, D]`` this rank's gallery rows (or a mapping); may be empty.
        k: hits per query, ``1 <= k <=`` the global gallery size; the same on every rank.
        gallery_offset: global index of this rank's first row. ``None`` on every rank: the
            shards follow each other in rank order. Given on every rank: the non-empty shards
            must tile the gallery.
        group: the process group (default: the default group; none initialised: one rank).
        normalize: L2-normalise rows first (cosine, as :func:`~textreid.retrieval.evaluate`
            does); ``False`` for inner products. Ignored with ``scorer`` (a
            :class:`~textreid.retrieval.CosineScorer` carries its own).
        scorer, chunk_size, query_block, screen, check_finite: as for
            :func:`~textreid.retrieval.topk_search`.
        query_sharded: each rank passes its own queries (any number, none included) instead
            of the same ones, and gets their hits. The ranks' queries are searched one rank
            after the other: each is broadcast, searched on every shard and merged, so memory
            holds one rank's queries at a time.

    Returns:
        :class:`~textreid.retrieval.SearchResult` with ``indices`` global (``gallery_offset``
        + local row), the same on every rank (with ``query_sharded``: of this rank's
        queries); with a scorer that has an uncertainty also ``query_uncertainty`` and
        ``gallery_uncertainty``.

    Raises:
        TypeError: a ``group`` that is not a process group; the errors of
            :func:`~textreid.retrieval.topk_search`.
        ValueError: on every rank, when any rank's inputs are refused; ``k`` outside
            ``[1, Ng]`` or different between ranks, different query counts, shards whose
            feature names, dtypes or row shapes differ, offsets given on some ranks only or
            that do not tile the gallery; and the errors of
            :func:`~textreid.retrieval.topk_search`.
    """
    fn = "sharded_topk_search"
    g = _Group(group, fn)
    settings = _SearchSettings(normalize, scorer, chunk_size, query_block, screen, check_finite)
    if not query_sharded:
        return _topk_round(g, fn, query, gallery_shard, k, gallery_offset, settings)
    mine: SearchResult | None = None
    for r, q_r, _ in _query_rounds(g, query, None, "query", fn):
        result = _topk_round(g, fn, q_r, gallery_shard, k, gallery_offset, settings)
        if r == g.rank:
            mine = result
    if mine is not None:
        return mine
    # This rank has no queries: no hits, in the dtype its queries would have had.
    q = as_features(query, name="query", fn=fn)
    dtype = compute_dtype(*(t for t in q.values() if t.is_floating_point()))
    device = next(iter(q.values())).device
    return SearchResult(
        torch.empty(0, k, dtype=dtype, device=device),
        torch.empty(0, k, dtype=torch.int64, device=device),
    )


class _SearchSettings(NamedTuple):
    normalize: bool
    scorer: Scorer | None
    chunk_size: int
    query_block: int
    screen: Screen
    check_finite: bool


def _topk_round(
    g: _Group,
    fn: str,
    query: Tensor | Features,
    gallery_shard: Tensor | Features,
    k: int,
    gallery_offset: int | None,
    settings: _SearchSettings,
) -> SearchResult:
    """:func:`sharded_topk_search` of queries that every rank holds."""
    normalize, scorer, chunk_size, query_block, screen, check_finite = settings
    error: Exception | None = None
    hits: SearchResult | None = None
    sig = nq = n = offset = dcode = 0
    has_u = -1
    try:
        offset = _check_offset(gallery_offset, fn)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{fn}: k must be a positive int, got {k!r}")
        shard, n = _shard_rows(gallery_shard, "gallery_shard", fn)
        nq = num_rows(as_features(query, name="query", fn=fn), name="query", fn=fn)
        sig = _signature(shard)
        if n:
            hits = topk_search(
                query,
                gallery_shard,
                min(k, n),
                chunk_size=chunk_size,
                query_block=query_block,
                normalize=normalize and scorer is None,
                screen=screen,
                check_finite=check_finite,
                scorer=scorer,
            )
            dcode = _SCORE_DTYPES.index(hits.scores.dtype)
            has_u = int(hits.gallery_uncertainty is not None)
        else:
            # No local search to check the query: check it here, as every other rank does.
            check = scorer if scorer is not None else CosineScorer()
            check.validate(query, "query", fn, finite=check_finite)
    except (TypeError, ValueError) as e:
        error = e
    table = g.agree(error, [k if isinstance(k, int) else 0, nq, n, offset, sig, dcode, has_u], fn)
    _same_on_all(
        table,
        [(0, "k"), (1, "the number of queries"),
         (4, "feature names, dtypes and row shapes of gallery_shard")],
        fn,
    )  # fmt: skip
    starts, total = _offsets(table, 2, 3, fn)
    if k > total:
        raise ValueError(
            f"{fn}: k must be an int in [1, Ng={total}] (the whole sharded gallery), got {k}; "
            "pass k=min(k, Ng) to ask for everything"
        )
    live = [r for r in range(g.size) if int(table[r, 2])]
    dtype = _SCORE_DTYPES[int(table[live[0], 5])]
    with_u = any(int(table[r, 6]) == 1 for r in live)
    device = next(iter(as_features(query, name="query", fn=fn).values())).device
    # Every rank sends k columns; padding (lowest score, an index past the gallery) sorts last.
    scores = torch.full((nq, k), torch.finfo(dtype).min, dtype=dtype, device=device)
    index = torch.full((nq, k), total, dtype=torch.int64, device=device)
    unc = torch.zeros((nq, k + 1), dtype=torch.float64, device=device)
    if hits is not None:
        m = hits.indices.shape[1]
        scores[:, :m] = hits.scores
        index[:, :m] = hits.indices + starts[g.rank]
        if hits.gallery_uncertainty is not None:
            unc[:, :m] = hits.gallery_uncertainty.to(torch.float64)
        if hits.query_uncertainty is not None:
            unc[:, k] = hits.query_uncertainty.to(torch.float64)
    all_s = torch.cat(g.all_gather(scores), 1)
    all_i = torch.cat(g.all_gather(index), 1)
    order = _order(all_s, all_i)[:, :k]
    out_s, out_i = all_s.gather(1, order), all_i.gather(1, order)
    if not with_u:
        return SearchResult(out_s, out_i)
    # Uncertainties travel in float64 (exact for every float dtype) and return in the
    # dtype of the scores the scorer produced.
    all_u = g.all_gather(unc)
    q_u = all_u[live[0]][:, k].to(dtype)
    g_u = torch.cat([u[:, :k] for u in all_u], 1).gather(1, order).to(dtype)
    return SearchResult(out_s, out_i, q_u, g_u)


def sharded_evaluate(
    query: Tensor | Features,
    gallery_shard: Tensor | Features,
    *,
    query_pids: Tensor,
    gallery_pids: Tensor,
    gallery_offset: int | None = None,
    group: dist.ProcessGroup | None = None,
    ks: Iterable[int] = (1, 5, 10),
    normalize: bool = True,
    scorer: Scorer | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    query_block: int = DEFAULT_QUERY_BLOCK,
    return_ranks: bool = False,
    check_finite: bool = True,
    query_sharded: bool = False,
) -> RetrievalMetrics:
    """R@K, mAP and mINP over a gallery sharded across the ranks of a process group.

    Call it on every rank of ``group`` with the same queries, query ids and settings and the
    rank's own gallery shard with its ids. Ranks are counted as by
    :func:`~textreid.retrieval.evaluate` (stable descending order: among equal scores the
    lower *global* gallery index first): the positives of each query block are gathered from
    every rank, each rank counts the negatives of its shard ahead of each positive, and an
    ``all_reduce`` adds the counts. The metrics are the same on every rank, and a function of
    the scores only: they are exactly :func:`~textreid.retrieval.evaluate`'s on the whole
    gallery wherever the two compute the same scores (e.g. for exactly representable
    arithmetic, ties included). Each shard's scores come from its own matrix products and
    can differ from one process's in the last bit, as between two chunk sizes of
    :func:`~textreid.retrieval.evaluate`; only a positive and a negative that close can then
    swap places. A shard of at most ``chunk_size`` rows scores every pair once (one product
    per query block, the positives' scores read off it); a larger one scores its positives
    pair by pair and the rest chunk by chunk.

    Args:
        query: ``[Nq, D]`` query features (or a features mapping), identical on every
            rank.
        gallery_shard: ``[Ng_r, D]`` this rank's gallery rows (or a mapping); may be empty.
        query_pids: ``[Nq]`` integer identity of each query, identical on every rank.
        gallery_pids: ``[Ng_r]`` integer identity of each row of the shard.
        gallery_offset: global index of this rank's first row, as for
            :func:`sharded_topk_search`.
        group: the process group (default: the default group; none initialised: one rank).
        ks, normalize, scorer, chunk_size, query_block, return_ranks, check_finite: as for
            :func:`~textreid.retrieval.evaluate`.
        query_sharded: each rank passes its own queries and their ids (any number, none
            included); the ranks' queries are evaluated one rank after the other, and the
            metrics are those of all the queries together, in rank order.

    Returns:
        :class:`~textreid.retrieval.RetrievalMetrics`, the same on every rank (with
        ``query_sharded`` and ``return_ranks``, ``first_positive_ranks`` of this rank's
        queries).

    Raises:
        TypeError: a ``group`` that is not a process group, non-tensor or non-floating
            features, non-integer pids, a ``scorer`` that is not a
            :class:`~textreid.retrieval.Scorer`.
        ValueError: on every rank, when any rank's inputs are refused: wrong shapes or widths,
            pid counts that do not match the rows, non-finite values, bad ``ks`` or block
            sizes, settings or query counts that differ between ranks, shards whose feature
            names, dtypes or row shapes differ, offsets given on some ranks only or that do
            not tile the gallery, an empty gallery.
    """
    fn = "sharded_evaluate"
    g = _Group(group, fn)
    settings = _EvalSettings(ks, normalize, scorer, chunk_size, query_block, return_ranks,
                             check_finite)  # fmt: skip
    if not query_sharded:
        counts = _eval_round(
            g, fn, query, gallery_shard, query_pids, gallery_pids, gallery_offset, settings
        )
        own = slice(None)
    else:
        rounds = []
        start = 0
        for r, q_r, qp_r in _query_rounds(g, query, query_pids, "query", fn):
            assert qp_r is not None  # pids were given
            if r < g.rank:
                start += qp_r.shape[0]
            rounds.append(
                _eval_round(g, fn, q_r, gallery_shard, qp_r, gallery_pids, gallery_offset, settings)
            )
        mine = query_pids.shape[0] if isinstance(query_pids, Tensor) else 0
        own = slice(start, start + mine)
        counts = _RankCounts(
            torch.cat([c.first for c in rounds]),
            torch.cat([c.ap for c in rounds]),
            torch.cat([c.inp for c in rounds]),
            torch.cat([c.num_pos for c in rounds]),
            rounds[0].ks,
        )
    first, ap, inp, num_pos_all, ks_t = counts
    return _metrics(first, ap, inp, num_pos_all, ks_t, first[own] if return_ranks else None)


class _EvalSettings(NamedTuple):
    ks: Iterable[int]
    normalize: bool
    scorer: Scorer | None
    chunk_size: int
    query_block: int
    return_ranks: bool
    check_finite: bool


class _RankCounts(NamedTuple):
    """Per query: first-positive rank, AP, INP (float64), positives; and the checked ks."""

    first: Tensor
    ap: Tensor
    inp: Tensor
    num_pos: Tensor
    ks: tuple[int, ...]


def _prepared(scorer: Scorer, f: Features, c0: int, size: int, dev: torch.device) -> Features:
    """Rows ``c0 : c0 + size`` of ``f`` on ``dev``, prepared as gallery rows."""
    return scorer.prepare(features_to(slice_rows(f, c0, c0 + size), dev), "gallery")


def _eval_round(
    g: _Group,
    fn: str,
    query: Tensor | Features,
    gallery_shard: Tensor | Features,
    query_pids: Tensor,
    gallery_pids: Tensor,
    gallery_offset: int | None,
    settings: _EvalSettings,
) -> _RankCounts:
    """The counts of :func:`sharded_evaluate` for queries that every rank holds."""
    ks, normalize, scorer, chunk_size, query_block, return_ranks, check_finite = settings
    error: Exception | None = None
    ks_t: tuple[int, ...] = ()
    nq = n = offset = sig = 0
    qf: dict[str, Tensor] = {}
    gf: dict[str, Tensor] = {}
    try:
        offset = _check_offset(gallery_offset, fn)
        if scorer is None:
            if not isinstance(normalize, bool):
                raise TypeError(f"{fn}: normalize must be a bool, got {type(normalize).__name__}")
            scorer = CosineScorer(normalize=normalize)
        check_scorer(scorer, fn)
        qf = scorer.validate(query, "query", fn, finite=check_finite, name="query")
        shard, n = _shard_rows(gallery_shard, "gallery_shard", fn)
        if n:
            gf = scorer.validate(shard, "gallery", fn, finite=check_finite, name="gallery_shard")
            scorer.check_pair(qf, gf, fn)
        else:
            missing = [key for key in scorer.required_keys("gallery") if key not in shard]
            if missing:
                raise ValueError(f"{fn}: gallery_shard features lack {missing}, which "
                                 f"{type(scorer).__name__} reads")  # fmt: skip
            gf = shard
        qf = {key: qf[key] for key in scorer.required_keys("query")}
        gf = {key: gf[key] for key in scorer.required_keys("gallery")}
        nq = num_rows(qf)
        check_ids(query_pids, "query_pids", fn, nq, "query")
        if n:
            check_ids(gallery_pids, "gallery_pids", fn, n, "gallery_shard")
        elif not isinstance(gallery_pids, Tensor) or gallery_pids.shape != (0,):
            raise ValueError(f"{fn}: gallery_pids must be an empty [0] tensor for an empty "
                             f"gallery_shard, got {gallery_pids!r}")  # fmt: skip
        ks_t = _check_ks(ks, fn)
        check_positive(chunk_size, "chunk_size", fn)
        check_positive(query_block, "query_block", fn)
        sig = _signature(gf)
    except (TypeError, ValueError) as e:
        error = e
    agreed = zlib.crc32(repr((ks_t, query_block, scorer, return_ranks)).encode())
    table = g.agree(error, [nq, n, offset, sig, agreed], fn)
    _same_on_all(
        table,
        [(0, "the number of queries"),
         (3, "feature names, dtypes and row shapes of gallery_shard"),
         (4, "ks, query_block, scorer and return_ranks")],
        fn,
    )  # fmt: skip
    starts, total = _offsets(table, 1, 2, fn)
    if total == 0:
        raise ValueError(f"{fn}: the sharded gallery is empty on every rank")
    assert scorer is not None  # set above, or the ranks raised
    start = starts[g.rank]
    dev = next(iter(qf.values())).device
    dtype = compute_dtype(*qf.values(), *gf.values())
    qp = query_pids.to(dev, torch.int64)
    gp = gallery_pids.to(dev, torch.int64)
    by_pid = torch.sort(gp, stable=True)  # each id's rows stay in index order
    # Cosine scores come from cosine_scores, the arithmetic of evaluate (one process then
    # gets its scores bit for bit). A shard that fits one chunk is scored by one product per
    # query block, from which the positives' scores are read: every pair scored once.
    cosine = scorer if type(scorer) is CosineScorer else None
    one_chunk = 0 < n <= chunk_size
    whole = _prepared(scorer, gf, 0, n, dev) if one_chunk and not cosine else None

    first = torch.zeros(nq, dtype=torch.int64, device=dev)
    ap = torch.zeros(nq, dtype=torch.float64, device=dev)
    inp = torch.zeros(nq, dtype=torch.float64, device=dev)
    num_pos_all = torch.zeros(nq, dtype=torch.int64, device=dev)
    for q0 in range(0, nq, query_block):
        bq = qp[q0 : q0 + query_block]
        b = bq.shape[0]
        q_rows = scorer.prepare(features_to(slice_rows(qf, q0, q0 + b), dev), "query")
        # This shard's positives of each query, then everyone's, best first.
        lo = torch.searchsorted(by_pid.values, bq, side="left")
        cnt = torch.searchsorted(by_pid.values, bq, side="right") - lo
        width = max(int(g.all_reduce(cnt.max().reshape(1), dist.ReduceOp.MAX)), 1)
        offs = torch.arange(width, device=dev)
        valid = offs < cnt.unsqueeze(1)
        local_s = torch.full((b, width), torch.finfo(dtype).min, dtype=dtype, device=dev)
        local_i = torch.full((b, width), total, dtype=torch.int64, device=dev)
        chunks: Iterable[tuple[int, Tensor]] = ()
        if cosine is not None and n:
            chunks = (
                (c.start, c.scores.to(dtype))
                for c in cosine_scores(
                    qf["global"][q0 : q0 + b],
                    gf["global"],
                    chunk_size,
                    normalize=cosine.normalize,
                    device=dev,
                    check_finite=False,
                )
            )
        elif n:
            chunks = (
                (c0, scorer.score(q_rows, _prepared(scorer, gf, c0, chunk_size, dev)).to(dtype))
                for c0 in range(0, n, chunk_size)
            )
        block = None
        if whole is not None:
            block = scorer.score(q_rows, whole).to(dtype)
        elif one_chunk:
            block = next(iter(chunks))[1]
        if block is not None:
            chunks = [(0, block)]
        if n:
            rows, slots = valid.nonzero(as_tuple=True)
            pos_rows = by_pid.indices[lo[rows] + slots]
            if block is not None:
                local_s[rows, slots] = block[rows, pos_rows]
            else:
                pairs = torch.empty(rows.shape[0], dtype=dtype, device=dev)
                for s in range(0, rows.shape[0], chunk_size):
                    at = slice(s, s + chunk_size)
                    gr = scorer.prepare(features_to(take_rows(gf, pos_rows[at]), dev), "gallery")
                    qr = take_rows(q_rows, rows[at])
                    pairs[s : s + num_rows(gr)] = scorer.score_pairs(qr, gr).to(dtype)
                local_s[rows, slots] = pairs
            local_i[rows, slots] = pos_rows + start
        all_s = torch.cat(g.all_gather(local_s), 1)
        all_i = torch.cat(g.all_gather(local_i), 1)
        num_pos = g.all_reduce(cnt)
        p = max(int(num_pos.max()), 1)
        order = _order(all_s, all_i)[:, :p]
        pos_s, pos_i = all_s.gather(1, order), all_i.gather(1, order)
        # evaluate's count of the negatives ahead of each positive, on global indices: the
        # key (start of the run of equal scores, index) breaks ties by the lower index.
        neg_sorted = -pos_s  # ascending
        stride = total + 1  # above every index, the padding's (total) included
        run_start = torch.searchsorted(neg_sorted, neg_sorted, side="left")
        pos_key = run_start * stride + pos_i
        limit = num_pos.unsqueeze(1)
        neg_ahead = torch.zeros(b, p, dtype=torch.int64, device=dev)
        for c0, scores in chunks:
            is_neg = gp[c0 : c0 + scores.shape[1]] != bq.unsqueeze(1)
            neg_ahead += _neg_ahead_histogram(
                neg_sorted, pos_key, limit, stride, start + c0, scores, is_neg
            )
        ranks = g.all_reduce(neg_ahead) + torch.arange(1, p + 1, device=dev)
        # The averages as evaluate forms them, term for term, so the sums round alike.
        ap[q0 : q0 + b], inp[q0 : q0 + b], first[q0 : q0 + b] = _rank_stats(ranks, num_pos)
        num_pos_all[q0 : q0 + b] = num_pos

    return _RankCounts(first, ap, inp, num_pos_all, ks_t)
