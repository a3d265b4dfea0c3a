"""Sharded exact retrieval: 2 and 3 gloo processes under torchrun agree with one process.

One launch of 3 processes runs every case on all 3 and, through a subgroup, on 2 of them.

The worker (``_distributed_worker.py``) shards seeded galleries unequally (one shard smaller
than k, an empty one with 3 ranks, shards placed by explicit offsets in reverse rank order);
the small-integer case has ties within and across shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests._torchrun import run_torchrun
from tests.retrieval._distributed_worker import QUERY_SHARDS, K, bounds, cases
from textreid.retrieval import GaussianScorer, evaluate, topk_search
from textreid.retrieval.distributed import sharded_evaluate, sharded_topk_search


def _run(out: Path) -> list[dict[int, dict[str, Any]]]:
    run_torchrun(Path(__file__).with_name("_distributed_worker.py"), 3, str(out))
    return [torch.load(f"{out}.{r}", weights_only=True) for r in range(3)]


def _same_metrics(got: tuple[dict[str, Any], torch.Tensor], want: Any) -> None:
    assert got[0] == want.to_dict()  # exact: every float equal
    assert torch.equal(got[1], want.first_positive_ranks)


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> list[dict[int, dict[str, Any]]]:
    """What each of 3 processes got, as 3 ranks and (ranks 0 and 1) as 2."""
    return _run(tmp_path_factory.mktemp("dist") / "out")


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_sharded_retrieval_equals_one_process(
    world: int, launched: list[dict[int, dict[str, Any]]]
) -> None:
    ranks = [by_world[world] for by_world in launched if world in by_world]
    assert len(ranks) == world
    c = cases()
    t, r, s = c["ties"], c["rand"], c["gauss"]
    ties = topk_search(t["q"], t["g"], K, normalize=False)
    rand = topk_search(r["q"], r["g"], K, normalize=True, chunk_size=4)
    q = {"mean": s["q_mean"], "log_var": s["q_log_var"]}
    gal = {"mean": s["g_mean"], "log_var": s["g_log_var"]}
    gauss = topk_search(q, gal, K, scorer=GaussianScorer())
    # The ties really cross shards: some query has equal scores on both sides of row 3.
    first_shard_scores = (t["q"] @ t["g"][:3].T).unsqueeze(2)
    assert bool((first_shard_scores == (t["q"] @ t["g"][3:].T).unsqueeze(1)).any())
    for out in ranks:
        for key, want in (("ties_topk", ties), ("offset_topk", ties), ("rand_topk", rand)):
            scores, indices = out[key]
            assert torch.equal(indices, want.indices), key
            assert torch.equal(scores, want.scores), key  # bit for bit
        g_s, g_i, q_u, g_u = out["gauss_topk"]
        assert torch.equal(g_i, gauss.indices)
        torch.testing.assert_close(g_s, gauss.scores, rtol=1e-6, atol=1e-6)
        assert torch.equal(q_u, gauss.query_uncertainty)
        assert torch.equal(g_u, gauss.gallery_uncertainty)

        kw: dict[str, Any] = {"return_ranks": True}
        want = evaluate(t["q"], t["g"], query_pids=t["qp"], gallery_pids=t["gp"],
                        normalize=False, **kw)  # fmt: skip
        _same_metrics(out["offset_eval"], want)
        want = evaluate(t["q"], t["g"], query_pids=t["qp"], gallery_pids=t["gp"],
                        normalize=False, ks=(1, 5, 10), **kw)  # fmt: skip
        _same_metrics(out["ties_eval"], want)
        _same_metrics(
            out["rand_eval"],
            evaluate(r["q"], r["g"], query_pids=r["qp"], gallery_pids=r["gp"], **kw),
        )
        _same_metrics(
            out["gauss_eval"],
            evaluate(
                q, gal, query_pids=s["qp"], gallery_pids=s["gp"], scorer=GaussianScorer(), **kw
            ),
        )
    whole = evaluate(t["q"], t["g"], query_pids=t["qp"], gallery_pids=t["gp"], normalize=False,
                     return_ranks=True)  # fmt: skip
    for rank, out in enumerate(ranks):  # each rank its own queries' hits and ranks
        rows = slice(*bounds(QUERY_SHARDS[world], rank))
        scores, indices = out["qshard_topk"]
        assert torch.equal(indices, ties.indices[rows])
        assert torch.equal(scores, ties.scores[rows])
        got_metrics, got_ranks = out["qshard_eval"]
        assert got_metrics == whole.to_dict()
        assert whole.first_positive_ranks is not None
        assert torch.equal(got_ranks, whole.first_positive_ranks[rows])
    # Bad input on one rank stops every rank with an error (here: rank 1's NaN query, k that
    # differs between ranks, k above the whole gallery, overlapping offsets).
    for rank, out in enumerate(ranks):
        nan, k_differs, k_large, nan_eval, overlap = out["errors"]
        for msg, fn in ((nan, "sharded_topk_search"), (nan_eval, "sharded_evaluate")):
            assert msg.startswith(fn), msg
            assert ("non-finite" in msg) if rank == 1 else ("rank(s) [1]" in msg), msg
        assert "k must be the same on every rank" in k_differs
        assert "k must be an int in [1, Ng=23]" in k_large
        assert "must tile rows [0, 23)" in overlap


def test_one_process_without_group_is_plain_retrieval() -> None:
    t = cases()["ties"]
    got = sharded_topk_search(t["q"], t["g"], K, normalize=False)
    want = topk_search(t["q"], t["g"], K, normalize=False)
    assert torch.equal(got.indices, want.indices)
    assert torch.equal(got.scores, want.scores)
    m = sharded_evaluate(t["q"], t["g"], query_pids=t["qp"], gallery_pids=t["gp"],
                         normalize=False, return_ranks=True, query_block=7, chunk_size=5)  # fmt: skip
    _same_metrics((m.to_dict(), m.first_positive_ranks),
                  evaluate(t["q"], t["g"], query_pids=t["qp"], gallery_pids=t["gp"],
                           normalize=False, return_ranks=True))  # fmt: skip


def test_one_process_scores_as_evaluate_does() -> None:
    """Cosine scores take evaluate's arithmetic: on random features (near-ties at float32
    included) one process gives evaluate's metrics bit for bit."""
    g = torch.Generator().manual_seed(3)
    q, gal = torch.randn(900, 64, generator=g), torch.randn(700, 64, generator=g)
    qp, gp = torch.randint(0, 150, (900,), generator=g), torch.randint(0, 150, (700,), generator=g)
    got = sharded_evaluate(q, gal, query_pids=qp, gallery_pids=gp, return_ranks=True)
    _same_metrics((got.to_dict(), got.first_positive_ranks),
                  evaluate(q, gal, query_pids=qp, gallery_pids=gp, return_ranks=True))  # fmt: skip


def test_bad_arguments_name_the_function() -> None:
    t = cases()["ties"]
    with pytest.raises(ValueError, match="sharded_topk_search: gallery_offset must be"):
        sharded_topk_search(t["q"], t["g"], K, gallery_offset=-1)
    with pytest.raises(ValueError, match="sharded_topk_search: k must be an int in"):
        sharded_topk_search(t["q"], t["g"], 24)
    with pytest.raises(TypeError, match="sharded_evaluate: group must be"):
        sharded_evaluate(t["q"], t["g"], query_pids=t["qp"], gallery_pids=t["gp"], group="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sharded_evaluate: gallery_pids has 22 entries"):
        sharded_evaluate(t["q"], t["g"], query_pids=t["qp"], gallery_pids=t["gp"][:22])
