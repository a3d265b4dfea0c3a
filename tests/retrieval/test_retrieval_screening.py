"""The bfloat16 screen of topk_search: the bound holds, and the hits are the exact top-k."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import textreid.retrieval.screening as screening
import textreid.retrieval.search as search_module
from tests.retrieval._helpers import stable_topk
from textreid.retrieval import GalleryIndex, SearchResult, topk_search
from textreid.retrieval.screening import (
    _BETA,
    GROUP,
    _bound,
    _threshold_keys,
    screen_chunk,
    screen_queries,
)


def _assert_exact_top_k(got: SearchResult, q: Tensor, g: Tensor, k: int) -> None:
    """Hits are a top-k of the float64 scores up to float32 rounding of each score.

    Float32 rounding bounds how far a returned score may be from its float64 value, and how
    far a missed item's score may exceed the k-th hit: both within ``tol`` per pair.
    """
    exact = q.double() @ g.double().T
    d = q.shape[1]
    tol = 2 * d * 2.0**-24 * (q.double().norm(dim=1, keepdim=True) * g.double().norm(dim=1).max())
    got_exact = exact.gather(1, got.indices)
    assert (got.scores.double() - got_exact).abs().le(tol).all()
    assert (got.scores[:, :-1] >= got.scores[:, 1:]).all()
    best_missed = exact.scatter(1, got.indices, float("-inf")).amax(1, keepdim=True)
    assert (best_missed <= got_exact[:, -1:] + tol).all()


@pytest.fixture
def outcomes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each call of the screen did: "screened", "rows scored exactly" (some rows'
    thresholds were not positive) or "dense" (it declined the block)."""
    seen: list[str] = []
    real = search_module.screened_topk

    def spy(*args: object, **kwargs: object) -> object:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        if out is None:
            seen.append("dense")
        elif out[1].numel():
            seen.append("rows scored exactly")
        else:
            seen.append("screened")
        return out

    monkeypatch.setattr(search_module, "screened_topk", spy)
    return seen


def test_bound_holds_for_every_pair() -> None:
    gen = torch.Generator().manual_seed(0)
    scales = torch.logspace(-20, 20, 9, dtype=torch.float64).float()
    q = torch.randn(64, 48, generator=gen) * scales.repeat(8)[:64, None]
    g = torch.randn(200, 48, generator=gen)
    g[:100] *= 1e-3
    g[5] = torch.tensor([1e-39] * 24 + [3.0] * 24)  # float32 denormals
    g[7] = 0.0
    # Worst cases of Cauchy-Schwarz: a row's rounding error parallel to the other side's row
    # while the rounded rows are orthogonal (s~ = 0, all of the score is rounding error).
    sign = torch.ones(48)
    sign[::2] = -1
    q[0], g[9] = 1 + 0.49 * 2.0**-8 * sign, sign
    q[1], g[11] = sign, 1 + 0.49 * 2.0**-8 * sign
    queries, chunk = screen_queries(q), screen_chunk(g)
    approx = (queries.low @ chunk.low.T).float()[:, : g.shape[0]]
    exact = q.double() @ g.double().T
    a = _bound(queries, chunk).double().unsqueeze(1)
    assert ((exact - approx.double()).abs() <= a + _BETA * approx.double().abs()).all()
    assert approx[0, 9] == approx[1, 11] == 0
    assert exact[0, 9] == exact[1, 11] > 0.05
    # and it is not vacuous: for unit rows it is a few thousandths
    unit = screen_queries(F.normalize(q, dim=1))
    assert float(_bound(unit, screen_chunk(F.normalize(g, dim=1))).max()) < 0.01


def test_chunk_is_padded_to_whole_groups() -> None:
    chunk = screen_chunk(torch.ones(GROUP + 3, 4))
    assert chunk.low.shape == (2 * GROUP, 4)
    assert torch.equal(chunk.low[GROUP + 3 :].float(), torch.zeros(GROUP - 3, 4))


@pytest.mark.parametrize("k", [1, 5, 10])
def test_screened_hits_equal_unscreened_on_unit_features(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    protos = torch.randn(300, 64, generator=gen)
    q = protos[torch.randint(0, 300, (150,), generator=gen)] + torch.randn(150, 64, generator=gen)
    g = protos.repeat(10, 1) + 2 * torch.randn(3000, 64, generator=gen)
    kw = {"normalize": True, "chunk_size": 1300, "query_block": 64}
    on = topk_search(q, g, k, screen="bf16", **kw)
    off = topk_search(q, g, k, screen="off", **kw)
    assert torch.equal(on.indices, off.indices)
    torch.testing.assert_close(on.scores, off.scores, rtol=0, atol=1e-6)
    _assert_exact_top_k(on, F.normalize(q, dim=1), F.normalize(g, dim=1), k)


def test_differences_below_bfloat16_resolution_are_ranked_exactly() -> None:
    # 700 near-copies of one row: their scores (about 28) differ by ~1e-2, far below the
    # bfloat16 step there (0.125) and far above float32 rounding (~5e-5); the screen sees
    # them as a few big ties, so the order must come from the rescoring.
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(1, 32, generator=gen)
    g = base.repeat(700, 1)
    g[:, 0] += torch.randn(700, generator=gen) * 3e-3
    g = torch.cat([g, torch.randn(1300, 32, generator=gen) * 0.1])
    g = g[torch.randperm(g.shape[0], generator=gen)]
    q = base + 1e-3 * torch.randn(5, 32, generator=gen)
    approx = (q.bfloat16() @ g.bfloat16().T).float()
    assert (approx == approx.amax(1, keepdim=True)).sum(1).min() > 10  # the screen cannot tell
    got = topk_search(q, g, 10, screen="bf16", normalize=False)
    assert torch.equal(got.indices, stable_topk(q.double() @ g.double().T, 10).indices)
    _assert_exact_top_k(got, q, g, 10)


def test_exact_ties_keep_the_lower_index() -> None:
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(1000, 16, generator=gen)
    g[[900, 40, 650]] = g[[3, 3, 3]]  # four copies of row 3
    q = g[3:4] * 2
    got = topk_search(q, g, 3, screen="bf16", chunk_size=500, normalize=False)
    assert got.indices.tolist() == [[3, 40, 650]]


def test_rows_whose_scores_are_not_positive_fall_back() -> None:
    # All scores negative or zero: the screen's threshold is never positive.
    gen = torch.Generator().manual_seed(3)
    g = torch.rand(1200, 8, generator=gen)
    q = torch.cat([-torch.rand(3, 8, generator=gen), torch.zeros(1, 8)])
    got = topk_search(q, g, 4, screen="bf16", normalize=False)
    assert torch.equal(got.indices, topk_search(q, g, 4, screen="off", normalize=False).indices)
    assert torch.equal(got.indices, stable_topk(q.double() @ g.double().T, 4).indices)


def test_mixed_rows_and_huge_features() -> None:
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(1500, 24, generator=gen)
    q = torch.randn(6, 24, generator=gen)
    q[2] = -g[:50].sum(0).abs()  # mostly negative scores for this row only
    for scale in (1.0, 1e25):  # 1e25: norms products past the bound's safe range
        got = topk_search(q * scale, g, 7, screen="bf16", query_block=4, normalize=False)
        assert torch.equal(got.indices, stable_topk((q * scale).double() @ g.double().T, 7).indices)


def test_bound_holds_when_rounding_errors_align_on_both_sides() -> None:
    # qh = ones, gh = signs (orthogonal, so s~ = 0); q's rounding error is parallel to g and
    # g's to qh, each coordinate just under half a bfloat16 step: the whole score, 0.23, is
    # rounding error. Dropping either side's term of the bound would miss it.
    sign = torch.ones(1, 48)
    sign[:, ::2] = -1
    step = torch.where(sign > 0, 2.0**-7, 2.0**-8)  # bfloat16 spacing above / below 1
    q = 1 + 0.49 * step * sign
    g = sign + 0.49 * 2.0**-8
    queries, chunk = screen_queries(q), screen_chunk(g)
    assert torch.equal(queries.low.float(), torch.ones(1, 48))
    assert torch.equal(chunk.low[:1].float(), sign)
    approx = float((queries.low @ chunk.low.T)[0, 0])
    exact = float(q.double() @ g.double().T)
    a = float(_bound(queries, chunk))
    assert approx == 0
    assert exact > 0.2
    assert exact <= a <= 1.5 * exact


def test_gallery_bound_is_near_the_worst_rounding() -> None:
    # The gallery's error is bounded a priori (2^-8 ||g||). Exact queries (ones), gallery
    # rounded to signs (s~ = 0) with every coordinate's error adding up: 74% of the bound.
    sign = torch.ones(1, 48)
    sign[:, ::2] = -1
    g = torch.where(sign > 0, 1 + 0.99 * 2.0**-8, -(1 - 0.49 * 2.0**-8))
    queries, chunk = screen_queries(torch.ones(1, 48)), screen_chunk(g)
    assert torch.equal(chunk.low[:1].float(), sign)
    exact = float(torch.ones(1, 48).double() @ g.double().T)
    a = float(_bound(queries, chunk))
    assert float((queries.low @ chunk.low.T)[0, 0]) == 0
    assert 0.7 * a <= exact <= a


def test_bound_covers_rounding_of_the_output() -> None:
    # Inputs exact in bfloat16 and a sum exact in float32: the only error is rounding the
    # float32 sum to the bfloat16 output.
    q = torch.tensor([[1.0, 2.0**-8 + 2.0**-12]]).bfloat16().float()
    g = torch.tensor([[1.0, 1.0]] * 64)
    queries, chunk = screen_queries(q), screen_chunk(g)
    approx = (queries.low @ chunk.low.T).double()[:, :64]
    err = (q.double() @ g.double().T - approx).abs()
    assert float(err.max()) > 2.0**-9
    a = _bound(queries, chunk).double().unsqueeze(1)
    assert (err <= a + _BETA * approx.abs()).all()


def _cancelling(gen: torch.Generator, n: int, d: int, offset: float, alternate: bool) -> Tensor:
    """Rows ``offset * (1, -1, 1, ...) + noise`` (``alternate``) or ``offset * (1, 1, ...) +
    noise``: between the two kinds the large terms cancel, so bfloat16 rounding of the
    inputs scrambles the order of the small scores that remain."""
    pattern = torch.ones(d)
    if alternate:
        pattern[1::2] = -1
    return offset * pattern + torch.randn(n, d, generator=gen)


def _scrambled(seed: int, shift: bool) -> tuple[Tensor, Tensor]:
    """Cancelling queries and gallery (20 x 3000, D=6); with ``shift`` a seventh coordinate
    adds the same 9e5 to every score, so the scores are positive (screened rows) while the
    bound, driven by the norms, stays wider than their whole spread."""
    gen = torch.Generator().manual_seed(seed)
    q = _cancelling(gen, 20, 6, 300.0, alternate=True)
    g = _cancelling(gen, 3000, 6, 2000.0, alternate=False)
    if shift:
        q = torch.cat([q, torch.full((20, 1), 3000.0)], 1)
        g = torch.cat([g, torch.full((3000, 1), 300.0)], 1)
    return q, g


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("exact_side", ["none", "query"])
@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("dense_fraction", [screening.DENSE_FRACTION, 1.0])
def test_cancellation_scrambles_the_screen_but_not_the_hits(
    seed: int,
    exact_side: str,
    shift: bool,
    dense_fraction: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # exact_side="query": the queries are already bfloat16, so only the gallery's rounding
    # (and its term of the bound) reorders the hits. dense_fraction=1: never fall back to
    # dense scoring, however many pairs the screen keeps.
    monkeypatch.setattr(screening, "DENSE_FRACTION", dense_fraction)
    q, g = _scrambled(seed, shift)
    if exact_side == "query":
        q = q.bfloat16().float()
    exact = q.double() @ g.double().T
    approx = (q.bfloat16() @ g.bfloat16().T).double()
    ref = stable_topk(exact, 10)
    screen_top = approx.topk(10, dim=1).indices
    shared = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(screen_top, ref.indices)]
    assert sum(shared) / len(shared) < 5  # the screen's own top-10 is mostly wrong
    got = topk_search(q, g, 10, screen="bf16", chunk_size=1400, query_block=8, normalize=False)
    assert torch.equal(got.indices, ref.indices)
    _assert_exact_top_k(got, q, g, 10)


@pytest.mark.parametrize(
    ("data", "dense_fraction", "outcome"),
    [
        ("scrambled", screening.DENSE_FRACTION, "rows scored exactly"),  # threshold <= 0
        ("scrambled+shift", screening.DENSE_FRACTION, "dense"),  # every pair would pass
        ("scrambled+shift", 1.0, "screened"),
        ("retrieval", screening.DENSE_FRACTION, "screened"),  # the common case
    ],
)
def test_which_path_blocks_take(
    data: str,
    dense_fraction: float,
    outcome: str,
    outcomes: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(screening, "DENSE_FRACTION", dense_fraction)
    if data == "retrieval":  # CUHK-PEDES-like: unit features around identity prototypes
        gen = torch.Generator().manual_seed(9)
        protos = torch.randn(1000, 256, generator=gen)
        q = protos[torch.randint(0, 1000, (64,), generator=gen)]
        q = F.normalize(q + 2.5 * torch.randn(64, 256, generator=gen), dim=1)
        g = F.normalize(protos.repeat(3, 1) + 2.5 * torch.randn(3000, 256, generator=gen), dim=1)
    else:
        q, g = _scrambled(0, shift=data.endswith("shift"))
    topk_search(q, g, 10, screen="bf16", normalize=False)
    assert outcomes == [outcome]


def test_threshold_is_rounded_down_onto_the_bfloat16_grid() -> None:
    gen = torch.Generator().manual_seed(7)
    lower = torch.randn(5000, generator=gen).exp() * 10 ** torch.randint(-6, 6, (5000,)).float()
    a = lower * torch.rand(5000, generator=gen) * 0.5
    keys = _threshold_keys(lower, a)
    assert (keys > 0).all()

    def upper(key: Tensor) -> Tensor:  # largest score a screened value could stand for
        v = key.view(torch.bfloat16).double()
        return v + a.double() + _BETA * v.abs()

    assert (upper(keys - 1) < lower.double()).all()  # everything below the key is ruled out
    assert (upper(keys + 1) >= lower.double()).all()  # and the key is not needlessly low
    assert (_threshold_keys(-lower, a) == 0).all()  # not positive: no threshold


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    k=st.integers(1, 12),
    d=st.integers(1, 40),
    log_scale=st.floats(-8, 8),
    offsets=st.tuples(st.sampled_from([0.0, 30.0, 300.0]), st.sampled_from([0.0, 300.0, 2000.0])),
    chunk=st.sampled_from([700, 1100, 5000]),
    dup=st.booleans(),
)
def test_property_screened_is_exact(
    seed: int,
    k: int,
    d: int,
    log_scale: float,
    offsets: tuple[float, float],
    chunk: int,
    dup: bool,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    g = _cancelling(gen, 2600, d, offsets[1], alternate=False) * 10**log_scale
    if dup:  # exact ties across chunks and groups
        g[1000:1400] = g[:400]
    q = _cancelling(gen, 9, d, offsets[0], alternate=True)
    got = topk_search(q, g, k, chunk_size=chunk, query_block=5, screen="bf16", normalize=False)
    _assert_exact_top_k(got, q, g, k)
    tied = got.scores[:, 1:] == got.scores[:, :-1]
    assert (got.indices[:, 1:] > got.indices[:, :-1])[tied].all()


def test_auto_screens_only_where_it_pays(
    outcomes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    q, g = torch.randn(64, 8), torch.randn(1000, 8)
    monkeypatch.setattr(search_module, "native_bf16", lambda: True)
    topk_search(q, g, 2, normalize=False)
    assert outcomes, "float32, 64 queries, a CPU with bfloat16 dot products: screened"
    outcomes.clear()
    topk_search(q.double(), g.double(), 2, normalize=False)
    topk_search(q, g, 2, screen="off", normalize=False)
    topk_search(q, g, 5, normalize=False)  # 1000 columns < 4 groups per hit
    topk_search(q[:63], g, 2, normalize=False)  # too few queries to pay for preparing the chunk
    assert not outcomes
    topk_search(q[:63], g, 2, screen="bf16", normalize=False)
    assert outcomes
    outcomes.clear()
    monkeypatch.setattr(search_module, "native_bf16", lambda: False)
    topk_search(q, g, 2, normalize=False)
    assert not outcomes
    topk_search(q, g, 2, screen="bf16", normalize=False)
    assert outcomes


def test_float64_and_half_inputs() -> None:
    gen = torch.Generator().manual_seed(5)
    q, g = torch.randn(7, 16, generator=gen), torch.randn(900, 16, generator=gen)
    got = topk_search(q.double(), g.double(), 3, screen="bf16", normalize=False)
    assert got.scores.dtype == torch.float64
    assert torch.equal(got.indices, stable_topk(q.double() @ g.double().T, 3).indices)
    half = topk_search(q.half(), g.half(), 3, screen="bf16", normalize=False)
    ref = stable_topk(q.half().double() @ g.half().double().T, 3)
    assert torch.equal(half.indices, ref.indices)


def test_gallery_index_forwards_screen() -> None:
    gen = torch.Generator().manual_seed(6)
    index = GalleryIndex(torch.randn(800, 8, generator=gen))
    q = torch.randn(3, 8, generator=gen)
    a, b = index.search(q, 2, screen="bf16"), index.search(q, 2, screen="off")
    assert torch.equal(a.indices, b.indices)


def test_screen_errors() -> None:
    q, g = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="screen must be one of"):
        topk_search(q, g, 1, screen="fp8", normalize=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='screen="bf16" runs with backend="torch" on CPU'):
        topk_search(q, g, 1, screen="bf16", backend="faiss", normalize=False)
