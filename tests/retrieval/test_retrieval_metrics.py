"""evaluate(): counting ranks equals a full stable sort, IRRA's numbers, and clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import textreid.retrieval.metrics as metrics_mod
from textreid.retrieval import RetrievalMetrics, cosine_scores, evaluate


def _reference(
    scores: Tensor, qp: Tensor, gp: Tensor, ks: tuple[int, ...]
) -> tuple[dict[int, float], float, float, int, list[int]]:
    """Slow reference: a full stable descending sort per query, formulas written out."""
    hits = dict.fromkeys(ks, 0)
    ap_sum = inp_sum = 0.0
    valid = 0
    firsts = []
    for i in range(scores.shape[0]):
        order = torch.sort(scores[i].double(), descending=True, stable=True).indices.tolist()
        ranks = [r + 1 for r, g in enumerate(order) if int(gp[g]) == int(qp[i])]
        if not ranks:
            firsts.append(0)
            continue
        valid += 1
        firsts.append(ranks[0])
        for k in ks:
            hits[k] += ranks[0] <= k
        ap_sum += sum((j + 1) / r for j, r in enumerate(ranks)) / len(ranks)
        inp_sum += len(ranks) / ranks[-1]
    d = max(valid, 1)
    recall = {k: 100.0 * hits[k] / d for k in ks}
    return recall, 100.0 * ap_sum / d, 100.0 * inp_sum / d, scores.shape[0] - valid, firsts


def _assert_matches(
    m: RetrievalMetrics, ref: tuple[dict[int, float], float, float, int, list[int]]
) -> None:
    recall, mAP, mINP, missing, firsts = ref
    assert m.recall == pytest.approx(recall, abs=1e-9)
    assert m.mAP == pytest.approx(mAP, abs=1e-9)
    assert m.mINP == pytest.approx(mINP, abs=1e-9)
    assert m.num_queries_without_positive == missing
    assert m.first_positive_ranks is not None
    assert m.first_positive_ranks.tolist() == firsts


COUNTING = pytest.mark.parametrize("compare_max", [8, 0], ids=["compare", "histogram"])
"""Run a test with both counting strategies (few vs many positives per query)."""


def _evaluate(compare_max: int, **kwargs: object) -> RetrievalMetrics:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics_mod, "_COMPARE_MAX_POSITIVES", compare_max)
        return evaluate(**kwargs)  # type: ignore[arg-type]


@st.composite
def _tied_problem(draw: st.DrawFn) -> tuple[Tensor, Tensor, Tensor]:
    nq = draw(st.integers(1, 7))
    ng = draw(st.integers(1, 11))
    # Few distinct values: many exact ties, duplicate scores, positives tied with negatives.
    vals = draw(st.lists(st.integers(-2, 2), min_size=nq * ng, max_size=nq * ng))
    scores = torch.tensor(vals, dtype=torch.float32).view(nq, ng) / 4
    gp = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=ng, max_size=ng)))
    # Id 4 never appears in the gallery: queries without any positive.
    qp = torch.tensor(draw(st.lists(st.integers(0, 4), min_size=nq, max_size=nq)))
    return scores, qp, gp


@COUNTING
@given(problem=_tied_problem(), chunk=st.integers(1, 6), block=st.integers(1, 5))
def test_counting_equals_stable_sort_with_ties(
    compare_max: int, problem: tuple[Tensor, Tensor, Tensor], chunk: int, block: int
) -> None:
    scores, qp, gp = problem
    ks = (1, 2, 5, 20)
    m = _evaluate(
        compare_max,
        scores=scores,
        query_pids=qp,
        gallery_pids=gp,
        ks=ks,
        chunk_size=chunk,
        query_block=block,
        return_ranks=True,
    )
    _assert_matches(m, _reference(scores, qp, gp, ks))
    assert m.num_queries == scores.shape[0]


@COUNTING
@given(n=st.integers(1, 9), chunk=st.integers(1, 4))
def test_all_positives_and_constant_scores(compare_max: int, n: int, chunk: int) -> None:
    # Every gallery item is a positive and all scores tie: ranks are 1..n in index order.
    scores = torch.zeros(3, n)
    m = _evaluate(
        compare_max,
        scores=scores,
        query_pids=torch.zeros(3, dtype=torch.long),
        gallery_pids=torch.zeros(n, dtype=torch.long),
        chunk_size=chunk,
        return_ranks=True,
    )
    assert m.mAP == pytest.approx(100.0)
    assert m.mINP == pytest.approx(100.0)
    assert m.recall[1] == 100.0


@COUNTING
def test_many_positives_per_query(compare_max: int) -> None:
    # 300 positives per query: the binary-search path is exercised on real sizes.
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 50, (6, 900), generator=gen).float()
    gp = torch.arange(900) % 3
    qp = torch.tensor([0, 1, 2, 0, 1, 7])
    ks = (1, 10, 100)
    m = _evaluate(
        compare_max,
        scores=scores,
        query_pids=qp,
        gallery_pids=gp,
        ks=ks,
        chunk_size=128,
        query_block=4,
        return_ranks=True,
    )
    _assert_matches(m, _reference(scores, qp, gp, ks))


def test_features_equal_reference_and_chunking_is_exact(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    q, g = (
        torch.randn(37, 16, generator=gen, dtype=dtype),
        torch.randn(53, 16, generator=gen, dtype=dtype),
    )
    qp, gp = torch.randint(0, 12, (37,), generator=gen), torch.randint(0, 10, (53,), generator=gen)
    ref = _reference(F.normalize(q, dim=1) @ F.normalize(g, dim=1).T, qp, gp, (1, 5, 10))
    runs = [
        evaluate(
            q, g, query_pids=qp, gallery_pids=gp, chunk_size=c, query_block=b, return_ranks=True
        )
        for c, b in [(53, 37), (7, 5), (10, 1), (1, 64)]
    ]
    _assert_matches(runs[0], ref)
    for m in runs[1:]:
        assert m == runs[0]
        assert torch.equal(m.first_positive_ranks, runs[0].first_positive_ranks)  # type: ignore[arg-type]


def test_normalize_false_uses_inner_products() -> None:
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.5, 0.0], [10.0, 10.0]])  # cosine prefers item 0, inner product item 1
    pids = dict(query_pids=torch.tensor([0]), gallery_pids=torch.tensor([0, 1]))
    assert evaluate(q, g, **pids).recall[1] == 100.0
    assert evaluate(q, g, normalize=False, **pids).recall[1] == 0.0


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(half: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(2)
    q, g = torch.randn(40, 32, generator=gen).to(half), torch.randn(60, 32, generator=gen).to(half)
    qp, gp = torch.randint(0, 15, (40,), generator=gen), torch.randint(0, 15, (60,), generator=gen)
    m = evaluate(q, g, query_pids=qp, gallery_pids=gp, chunk_size=16, return_ranks=True)
    qf, gf = q.float(), g.float()
    ref = _reference(F.normalize(qf, dim=1) @ F.normalize(gf, dim=1).T, qp, gp, (1, 5, 10))
    _assert_matches(m, ref)


@given(problem=_tied_problem(), seed=st.integers(0, 2**16))
def test_permuting_queries_permutes_ranks(
    problem: tuple[Tensor, Tensor, Tensor], seed: int
) -> None:
    scores, qp, gp = problem
    perm = torch.randperm(scores.shape[0], generator=torch.Generator().manual_seed(seed))
    a = evaluate(scores=scores, query_pids=qp, gallery_pids=gp, return_ranks=True)
    b = evaluate(scores=scores[perm], query_pids=qp[perm], gallery_pids=gp, return_ranks=True)
    assert a.first_positive_ranks is not None
    assert b.first_positive_ranks is not None
    assert torch.equal(a.first_positive_ranks[perm], b.first_positive_ranks)
    assert b.mAP == pytest.approx(a.mAP, abs=1e-9)
    assert b.recall == a.recall


def test_no_query_has_a_positive_gives_zeros() -> None:
    m = evaluate(
        scores=torch.rand(3, 4),
        query_pids=torch.tensor([7, 8, 9]),
        gallery_pids=torch.tensor([0, 1, 2, 3]),
    )
    assert m.num_queries_without_positive == 3
    assert m.num_queries == 3
    assert m.mAP == 0.0
    assert m.mINP == 0.0
    assert set(m.recall.values()) == {0.0}


def test_precomputed_half_scores_and_float64_scores() -> None:
    gen = torch.Generator().manual_seed(4)
    s = torch.randn(9, 13, generator=gen)
    qp, gp = torch.randint(0, 4, (9,), generator=gen), torch.randint(0, 4, (13,), generator=gen)
    ref = _reference(s.half().float(), qp, gp, (1, 5, 10))
    _assert_matches(
        evaluate(scores=s.half(), query_pids=qp, gallery_pids=gp, return_ranks=True), ref
    )
    ref64 = _reference(s.double(), qp, gp, (1, 5, 10))
    _assert_matches(
        evaluate(scores=s.double(), query_pids=qp, gallery_pids=gp, return_ranks=True), ref64
    )


def test_result_helpers() -> None:
    m = evaluate(
        scores=torch.tensor([[0.9, 0.1], [0.1, 0.9]]),
        query_pids=torch.tensor([0, 0]),
        gallery_pids=torch.tensor([0, 1]),
        ks=(1, 2),
    )
    assert m.to_dict() == {
        "R1": 50.0,
        "R2": 100.0,
        "mAP": 75.0,
        "mINP": 75.0,
        "num_queries": 2,
        "num_queries_without_positive": 0,
    }
    table = m.format_table("t2i", digits=2)
    assert table.splitlines()[1].split() == [
        "|",
        "task",
        "|",
        "R1",
        "|",
        "R2",
        "|",
        "mAP",
        "|",
        "mINP",
        "|",
    ]
    assert "|  t2i | 50.00 | 100.00 | 75.00 | 75.00 |" in table
    assert m.first_positive_ranks is None
    with pytest.raises(AttributeError):
        m.mAP = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Parity with IRRA's utils/metrics.rank (anosorae/IRRA), run on the inputs below; the
# numbers are its float32 outputs. Inputs have no exact tie involving a positive, so the
# unstable argsort it uses cannot change a metric.


def _irra_recipe(seed: int, n_ids: int, noise: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """3 images per id, 2 captions per image, D=512, features = id prototype + noise."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.randn(n_ids, 512, generator=gen)
    gpid = torch.arange(n_ids).repeat_interleave(3)
    qpid = gpid.repeat_interleave(2)
    g = protos[gpid] + noise * torch.randn(len(gpid), 512, generator=gen)
    q = protos[qpid] + noise * torch.randn(len(qpid), 512, generator=gen)
    return q, g, qpid, gpid


# (R1, R5, R10, mAP, mINP) as IRRA returns them (float32).
IRRA_SEED0 = {
    "t2i": (56.16666793823242, 86.33333587646484, 93.0, 46.25169372558594, 23.04094696044922),
    "i2t": (65.0, 94.0, 96.66666412353516, 42.420509338378906, 11.387985229492188),
}
IRRA_SEED1 = {
    "t2i": (
        68.04999542236328,
        89.3499984741211,
        94.05000305175781,
        50.8099479675293,
        23.86982536315918,
    ),
    "i2t": (
        78.83333587646484,
        94.73333740234375,
        97.89999389648438,
        48.019412994384766,
        11.036455154418945,
    ),
}


def _same_to_last_digit(m: RetrievalMetrics, irra: tuple[float, ...], digits: int = 3) -> None:
    ours = (m.recall[1], m.recall[5], m.recall[10], m.mAP, m.mINP)
    assert [float(f"{v:.{digits}f}") for v in ours] == [float(f"{v:.{digits}f}") for v in irra]
    assert ours == pytest.approx(irra, abs=5e-5)  # float32 accumulation in the reference


def test_irra_worked_example() -> None:
    s = torch.tensor([[0.90, 0.80, 0.30, 0.10], [0.50, 0.20, 0.70, 0.60], [0.40, 0.45, 0.10, 0.30]])
    m = evaluate(
        scores=s,
        query_pids=torch.tensor([1, 2, 3]),
        gallery_pids=torch.tensor([1, 2, 1, 3]),
        ks=(1, 2, 3, 4),
    )
    irra_cmc = (33.333335876464844, 33.333335876464844, 66.66667175292969, 100.0)
    assert [float(f"{m.recall[k]:.3f}") for k in (1, 2, 3, 4)] == [
        float(f"{v:.3f}") for v in irra_cmc
    ]
    assert float(f"{m.mAP:.3f}") == 47.222
    assert float(f"{m.mINP:.3f}") == 41.667
    assert m.mAP == pytest.approx(47.222225189208984, abs=1e-5)
    assert m.mINP == pytest.approx(41.666664123535156, abs=1e-5)


def _irra_case(seed: int, n_ids: int, noise: float, expected: dict[str, tuple[float, ...]]) -> None:
    q, g, qp, gp = _irra_recipe(seed, n_ids, noise)
    _same_to_last_digit(evaluate(q, g, query_pids=qp, gallery_pids=gp), expected["t2i"])
    _same_to_last_digit(evaluate(g, q, query_pids=gp, gallery_pids=qp), expected["i2t"])


def test_irra_parity_100_ids() -> None:
    _irra_case(0, 100, 3.0, IRRA_SEED0)


@pytest.mark.slow
def test_irra_parity_1000_ids() -> None:
    _irra_case(1, 1000, 2.5, IRRA_SEED1)


# ---------------------------------------------------------------------------------------
# Errors


def _ok() -> dict[str, Tensor]:
    return dict(query_pids=torch.tensor([0, 1]), gallery_pids=torch.tensor([0, 1, 1]))


def test_errors() -> None:
    q, g, s = torch.randn(2, 4), torch.randn(3, 4), torch.randn(2, 3)
    with pytest.raises(ValueError, match="evaluate: pass either scores"):
        evaluate(q, g, scores=s, **_ok())
    with pytest.raises(ValueError, match="evaluate: pass either scores"):
        evaluate(**_ok())
    with pytest.raises(ValueError, match="must be given together"):
        evaluate(q, **_ok())
    with pytest.raises(ValueError, match="query_feats has width 4 but gallery_feats has width 5"):
        evaluate(q, torch.randn(3, 5), **_ok())
    with pytest.raises(ValueError, match="gallery_pids has 2 entries but gallery_feats has 3 rows"):
        evaluate(q, g, query_pids=torch.tensor([0, 1]), gallery_pids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="query_pids has 3 entries but scores has 2 rows"):
        evaluate(scores=s, query_pids=torch.tensor([0, 1, 2]), gallery_pids=torch.tensor([0, 1, 1]))
    with pytest.raises(TypeError, match="query_pids must be an integer tensor"):
        evaluate(
            scores=s, query_pids=torch.tensor([0.0, 1.0]), gallery_pids=torch.tensor([0, 1, 1])
        )
    with pytest.raises(ValueError, match="ks must be a non-empty sequence of positive ints"):
        evaluate(scores=s, ks=(0, 5), **_ok())
    with pytest.raises(ValueError, match="ks must be a non-empty sequence of positive ints"):
        evaluate(scores=s, ks=(), **_ok())
    with pytest.raises(ValueError, match="chunk_size must be > 0"):
        evaluate(scores=s, chunk_size=0, **_ok())
    with pytest.raises(ValueError, match="query_block must be > 0"):
        evaluate(scores=s, query_block=0, **_ok())
    with pytest.raises(ValueError, match=r"scores contains 1 non-finite values"):
        evaluate(scores=torch.tensor([[0.0, float("nan"), 1.0], [0.0, 0.0, 0.0]]), **_ok())
    with pytest.raises(TypeError, match=r"scores has dtype torch.int64"):
        evaluate(scores=torch.zeros(2, 3, dtype=torch.long), **_ok())


def test_renamed_feature_arguments_warn_and_give_the_same_numbers() -> None:
    gen = torch.Generator().manual_seed(5)
    q, g = torch.randn(20, 8, generator=gen), torch.randn(30, 8, generator=gen)
    qp, gp = torch.randint(0, 6, (20,), generator=gen), torch.arange(30) % 6
    new = evaluate(query=q, gallery=g, query_pids=qp, gallery_pids=gp)
    with pytest.warns(FutureWarning, match="query_feats"):
        old = evaluate(query_feats=q, gallery=g, query_pids=qp, gallery_pids=gp)
    assert old == new
    with pytest.raises(TypeError, match="evaluate: got both gallery= and its deprecated name"):
        evaluate(q, g, gallery_feats=g, query_pids=qp, gallery_pids=gp)


def test_one_block_path_ranks_like_its_score_matrix() -> None:
    """A gallery within one chunk is scored by one matmul and the positives' scores are read
    off that block: ranks (exact ties with a duplicate item included) equal those of the
    same score matrix passed as ``scores=``."""
    gen = torch.Generator().manual_seed(6)
    q, g = torch.randn(40, 16, generator=gen), torch.randn(50, 16, generator=gen)
    g[10] = g[3]  # a duplicate item: exact ties between a positive and another item
    qp, gp = torch.randint(0, 10, (40,), generator=gen), torch.arange(50) % 10
    got = evaluate(q, g, query_pids=qp, gallery_pids=gp, return_ranks=True)
    s = torch.cat([c.scores for c in cosine_scores(q, g)], 1)
    assert torch.equal(s[:, 3], s[:, 10])
    ref = evaluate(scores=s, query_pids=qp, gallery_pids=gp, return_ranks=True)
    assert got.first_positive_ranks is not None
    assert ref.first_positive_ranks is not None
    assert torch.equal(got.first_positive_ranks, ref.first_positive_ranks)
    assert (got.mAP, got.mINP) == (ref.mAP, ref.mINP)
