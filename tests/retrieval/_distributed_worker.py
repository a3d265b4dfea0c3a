"""Run by ``torchrun --nproc_per_node 3`` from test_distributed_retrieval.py (gloo, CPU).

Every rank builds the same seeded cases, keeps its shard of each gallery and runs the sharded
search and metrics, once with the 3 processes and once with 2 of them (a subgroup); each rank
writes ``{world size: what it got}`` to ``argv[1] + f".{rank}"``. The test
compares them with one process on the whole gallery.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import torch
import torch.distributed as dist

from textreid.retrieval import GaussianScorer, RetrievalMetrics
from textreid.retrieval.distributed import sharded_evaluate, sharded_topk_search

# Tests import these to rebuild the same cases.
SHARDS = {2: [3, 20], 3: [3, 0, 20]}  # unequal, one smaller than k, one empty (3 ranks)
ALIGNED = {2: [8, 13], 3: [4, 8, 9]}  # whole chunks of 4 but the last one
QUERY_SHARDS = {2: [25, 5], 3: [12, 0, 18]}  # each rank's own queries (none on one)
K = 10


def cases() -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    # Small integers: every score is exact whatever the summation order, and ties abound
    # (within and across shards).
    ties = {
        "q": torch.randint(-2, 3, (30, 4), generator=g).float(),
        "g": torch.randint(-2, 3, (23, 4), generator=g).float(),
        "qp": torch.randint(0, 6, (30,), generator=g),
        "gp": torch.randint(0, 6, (23,), generator=g),
    }
    rand = {
        "q": torch.randn(70, 16, generator=g),
        "g": torch.randn(21, 16, generator=g),
        "qp": torch.randint(0, 7, (70,), generator=g),
        "gp": torch.randint(0, 7, (21,), generator=g),
    }
    gauss = {
        "q_mean": torch.randn(12, 8, generator=g),
        "q_log_var": torch.randn(12, 8, generator=g) * 0.1,
        "g_mean": torch.randn(23, 8, generator=g),
        "g_log_var": torch.randn(23, 8, generator=g) * 0.1,
        "qp": torch.randint(0, 5, (12,), generator=g),
        "gp": torch.randint(0, 5, (23,), generator=g),
    }
    return {"ties": ties, "rand": rand, "gauss": gauss}


def bounds(sizes: list[int], rank: int) -> tuple[int, int]:
    start = sum(sizes[:rank])
    return start, start + sizes[rank]


def _metrics(m: RetrievalMetrics) -> tuple[dict[str, float | int], torch.Tensor | None]:
    return m.to_dict(), m.first_positive_ranks


def run(group: dist.ProcessGroup | None, rank: int, world: int) -> dict[str, Any]:
    """Every case on the ranks of ``group``; what this rank got."""
    search = functools.partial(sharded_topk_search, group=group)
    metrics = functools.partial(sharded_evaluate, group=group)
    c = cases()
    out: dict[str, Any] = {}

    a, b = bounds(SHARDS[world], rank)
    t = c["ties"]
    res = search(t["q"], t["g"][a:b], K, normalize=False)
    out["ties_topk"] = (res.scores, res.indices)
    m = metrics(
        t["q"], t["g"][a:b], query_pids=t["qp"], gallery_pids=t["gp"][a:b],
        normalize=False, ks=(1, 5, 10), return_ranks=True, chunk_size=5, query_block=8,
    )  # fmt: skip
    out["ties_eval"] = _metrics(m)

    # The same shards in reverse order of ranks, placed by explicit offsets.
    rev = SHARDS[world][::-1]
    a, b = bounds(rev, world - 1 - rank)
    res = search(t["q"], t["g"][a:b], K, gallery_offset=a, normalize=False)
    out["offset_topk"] = (res.scores, res.indices)
    m = metrics(
        t["q"], t["g"][a:b], query_pids=t["qp"], gallery_pids=t["gp"][a:b], gallery_offset=a,
        normalize=False, return_ranks=True,
    )  # fmt: skip
    out["offset_eval"] = _metrics(m)

    r = c["rand"]
    a, b = bounds(ALIGNED[world], rank)
    res = search(r["q"], r["g"][a:b], K, normalize=True, chunk_size=4)
    out["rand_topk"] = (res.scores, res.indices)
    m = metrics(
        r["q"], r["g"][a:b], query_pids=r["qp"], gallery_pids=r["gp"][a:b], return_ranks=True
    )
    out["rand_eval"] = _metrics(m)

    s = c["gauss"]
    a, b = bounds(SHARDS[world], rank)
    q = {"mean": s["q_mean"], "log_var": s["q_log_var"]}
    gal = {"mean": s["g_mean"][a:b], "log_var": s["g_log_var"][a:b]}
    res = search(q, gal, K, scorer=GaussianScorer())
    out["gauss_topk"] = (res.scores, res.indices, res.query_uncertainty, res.gallery_uncertainty)
    m = metrics(
        q, gal, query_pids=s["qp"], gallery_pids=s["gp"][a:b], scorer=GaussianScorer(),
        return_ranks=True,
    )  # fmt: skip
    out["gauss_eval"] = _metrics(m)

    # Every rank with its own queries (the ties case, 30 queries), its own gallery shard.
    qa, qb = bounds(QUERY_SHARDS[world], rank)
    a, b = bounds(SHARDS[world], rank)
    res = search(t["q"][qa:qb], t["g"][a:b], K, normalize=False, query_sharded=True)
    out["qshard_topk"] = (res.scores, res.indices)
    m = metrics(
        t["q"][qa:qb], t["g"][a:b], query_pids=t["qp"][qa:qb], gallery_pids=t["gp"][a:b],
        normalize=False, return_ranks=True, query_sharded=True, query_block=8,
    )  # fmt: skip
    out["qshard_eval"] = _metrics(m)

    # Bad input on one rank is an error on every rank, not a hang.
    errors = []
    bad_q = t["q"].clone()
    if rank == 1:
        bad_q[0, 0] = float("nan")
    a, b = bounds(SHARDS[world], rank)
    for call in (
        lambda: search(bad_q, t["g"][a:b], K),
        lambda: search(t["q"], t["g"][a:b], K + rank),
        lambda: search(t["q"], t["g"][a:b], 24),
        lambda: metrics(bad_q, t["g"][a:b], query_pids=t["qp"], gallery_pids=t["gp"][a:b]),
        lambda: search(t["q"], t["g"][a:b], K, gallery_offset=0),
    ):
        try:
            call()
            errors.append("")
        except ValueError as e:
            errors.append(str(e))
    out["errors"] = errors
    return out


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 3
    # Two ranks through a subgroup of the three (which also exercises group=).
    pair = dist.new_group([0, 1])
    results = {3: run(None, rank, 3)}
    if rank < 2:
        results[2] = run(pair, rank, 2)
    torch.save(results, sys.argv[1] + f".{rank}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
