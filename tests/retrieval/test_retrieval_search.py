"""topk_search / cosine_scores: exact against a full stable sort, ties, chunking, dtypes, errors."""

from __future__ import annotations

import builtins
import pickle
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from tests.retrieval._helpers import stable_topk
from textreid.retrieval import CosineScorer, SearchResult, cosine_scores, topk_search


@st.composite
def _tied_features(draw: st.DrawFn) -> tuple[Tensor, Tensor, int]:
    nq, ng, d = draw(st.integers(1, 6)), draw(st.integers(1, 12)), draw(st.integers(1, 3))
    # Small integer features: inner products are exact and tie often.
    q = torch.tensor(draw(st.lists(st.integers(-2, 2), min_size=nq * d, max_size=nq * d)))
    g = torch.tensor(draw(st.lists(st.integers(-2, 2), min_size=ng * d, max_size=ng * d)))
    k = draw(st.integers(1, ng))
    return q.view(nq, d).float(), g.view(ng, d).float(), k


@given(problem=_tied_features(), chunk=st.integers(1, 5), block=st.integers(1, 4))
def test_topk_equals_stable_sort_with_ties(
    problem: tuple[Tensor, Tensor, int], chunk: int, block: int
) -> None:
    q, g, k = problem
    got = topk_search(q, g, k, chunk_size=chunk, query_block=block, normalize=False)
    ref = stable_topk(q @ g.T, k)
    assert torch.equal(got.indices, ref.indices)
    assert torch.equal(got.scores, ref.scores)


def test_cut_off_inside_a_tie_keeps_lower_indices() -> None:
    g = torch.tensor([[0.0], [1.0], [1.0], [1.0], [1.0], [2.0]])
    got = topk_search(torch.ones(1, 1), g, 3, chunk_size=2, normalize=False)
    assert got.indices.tolist() == [[5, 1, 2]]


def test_random_features_match_full_matrix(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(33, 24, generator=gen, dtype=dtype)
    g = torch.randn(101, 24, generator=gen, dtype=dtype)
    got = topk_search(q, g, 10, chunk_size=17, query_block=8, normalize=True)
    ref = stable_topk(F.normalize(q, dim=1) @ F.normalize(g, dim=1).T, 10)
    assert torch.equal(got.indices, ref.indices)
    torch.testing.assert_close(got.scores, ref.scores)
    assert got.scores.dtype == dtype
    assert got.indices.dtype == torch.int64


def test_chunking_gives_the_same_hits() -> None:
    # Exact arithmetic (integer features, any chunking) is covered by the hypothesis test;
    # with float features BLAS may round a dot product differently for another block shape,
    # so scores agree to rounding and the hits are the same.
    gen = torch.Generator().manual_seed(1)
    q, g = torch.randn(29, 8, generator=gen), torch.randn(70, 8, generator=gen)
    runs = [
        topk_search(q, g, 5, chunk_size=c, query_block=b, normalize=False)
        for c, b in [(70, 29), (7, 4), (9, 1)]
    ]
    for r in runs[1:]:
        assert torch.equal(r.indices, runs[0].indices)
        torch.testing.assert_close(r.scores, runs[0].scores)


def test_permuting_queries_permutes_results() -> None:
    gen = torch.Generator().manual_seed(2)
    q, g = torch.randn(12, 8, generator=gen), torch.randn(30, 8, generator=gen)
    perm = torch.randperm(12, generator=gen)
    a, b = topk_search(q, g, 4, normalize=False), topk_search(q[perm], g, 4, normalize=False)
    assert torch.equal(a.indices[perm], b.indices)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(half: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    q, g = torch.randn(10, 64, generator=gen).to(half), torch.randn(50, 64, generator=gen).to(half)
    got = topk_search(q, g, 5, chunk_size=16, normalize=False)
    ref = stable_topk(q.float() @ g.float().T, 5)
    assert got.scores.dtype == torch.float32
    assert torch.equal(got.indices, ref.indices)
    torch.testing.assert_close(got.scores, ref.scores)


def test_k_equal_to_gallery_returns_everything_sorted() -> None:
    q, g = torch.randn(3, 4), torch.randn(5, 4)
    got = topk_search(q, g, 5, chunk_size=2, normalize=False)
    assert torch.equal(got.indices, stable_topk(q @ g.T, 5).indices)


def test_faiss_backend_matches_torch() -> None:
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(4)
    q, g = torch.randn(20, 16, generator=gen), torch.randn(90, 16, generator=gen)
    a = topk_search(q, g, 7, chunk_size=25, normalize=True)
    b = topk_search(q, g, 7, chunk_size=25, normalize=True, backend="faiss")
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.scores, b.scores)


def test_faiss_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        topk_search(torch.randn(2, 3), torch.randn(4, 3), 2, backend="faiss", normalize=False)


def test_cosine_scores_streams_the_matrix() -> None:
    gen = torch.Generator().manual_seed(5)
    q, g = torch.randn(6, 5, generator=gen), torch.randn(11, 5, generator=gen)
    chunks = list(cosine_scores(q, g, chunk_size=4))
    assert [c.start for c in chunks] == [0, 4, 8]
    full = torch.cat([c.scores for c in chunks], 1)
    torch.testing.assert_close(full, F.normalize(q, dim=1) @ F.normalize(g, dim=1).T)
    raw = torch.cat([c.scores for c in cosine_scores(q, g, 4, normalize=False)], 1)
    torch.testing.assert_close(raw, q @ g.T)
    zero = torch.cat([c.scores for c in cosine_scores(torch.zeros(1, 5), g)], 1)
    assert torch.equal(zero, torch.zeros(1, 11))  # eps-clamped norm, as F.normalize


def test_errors() -> None:
    q, g = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"topk_search: k must be an int in \[1, Ng=4\], got 5"):
        topk_search(q, g, 5, normalize=False)
    with pytest.raises(ValueError, match="k must be an int"):
        topk_search(q, g, 0, normalize=False)
    with pytest.raises(ValueError, match="topk_search: query has width 3 but gallery has width 2"):
        topk_search(q, torch.randn(4, 2), 1, normalize=False)
    with pytest.raises(ValueError, match=r"topk_search: gallery must be 2-D \(Ng, D\)"):
        topk_search(q, torch.randn(4), 1, normalize=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        topk_search(q, g, 1, backend="annoy", normalize=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size must be > 0"):
        topk_search(q, g, 1, chunk_size=0, normalize=False)
    with pytest.raises(ValueError, match="query contains 1 non-finite"):
        topk_search(torch.tensor([[float("inf"), 0.0, 0.0]]), g, 1, normalize=False)
    with pytest.raises(ValueError, match="cosine_scores: empty batch"):
        next(cosine_scores(torch.randn(0, 3), g))


@pytest.mark.parametrize("seed", range(4))
def test_wide_blocks_with_ties_match_stable_sort(seed: int) -> None:
    # Blocks this wide take the top-k from the best groups of columns; integer features
    # tie across group boundaries and at the cut-off.
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-2, 3, (7, 2), generator=gen).float()
    g = torch.randint(-2, 3, (1001, 2), generator=gen).float()
    ref = stable_topk(q @ g.T, 10)
    for k in (1, 3, 7):
        for chunk in (1001, 450):
            got = topk_search(q, g, k, chunk_size=chunk, query_block=4, normalize=False)
            assert torch.equal(got.indices, ref.indices[:, :k])
            assert torch.equal(got.scores, ref.scores[:, :k])


@pytest.mark.parametrize(("half", "unit"), [(torch.float16, 2.0**-11), (torch.bfloat16, 2.0**-8)])
def test_half_features_give_the_float32_top_k_where_scores_are_apart(
    half: torch.dtype, unit: float
) -> None:
    """Rounding the features to ``half`` moves a cosine score by at most about
    ``2 u (1 + u)`` (u the unit roundoff; rows of norm 1): wherever the float32 scores of
    two neighbours in the ranking differ by more than twice that, both precisions agree."""
    gen = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(40, 64, generator=gen), dim=1)
    g = F.normalize(torch.randn(500, 64, generator=gen), dim=1)
    k = 10
    ref = topk_search(q, g, k + 1, normalize=True, screen="off")
    got = topk_search(q.to(half), g.to(half), k, normalize=True)
    assert got.scores.dtype == torch.float32
    margin = 2 * (2 * unit * (1 + unit)) * 1.01  # and the renormalisation of rounded rows
    gaps = ref.scores[:, :-1] - ref.scores[:, 1:]  # [Nq, k]: gap after each rank
    checked = 0
    for row in range(q.shape[0]):
        for j in range(k):
            # Rank j is fixed when it is apart from both neighbours (the cut-off included).
            apart = gaps[row, j] > margin and (j == 0 or gaps[row, j - 1] > margin)
            if apart:
                assert got.indices[row, j] == ref.indices[row, j], (row, j)
                checked += 1
    assert checked > 20  # the test compares something
    assert (got.scores - ref.scores[:, :k]).abs().max() <= margin / 2


def test_normalize_default_warns_until_it_becomes_cosine() -> None:
    q, g = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.warns(FutureWarning, match="normalize"):
        old = topk_search(q, g, 2)
    assert torch.equal(old.indices, topk_search(q, g, 2, normalize=False).indices)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        topk_search(q, g, 2, normalize=True)
        topk_search(q, g, 2, scorer=CosineScorer())


def test_search_result_keeps_gallery_ids_and_paths_through_pickle() -> None:
    r = SearchResult(
        torch.ones(1, 2),
        torch.tensor([[1, 0]]),
        gallery_ids=[["b", "a"]],
        gallery_paths=[["img/b.jpg", "img/a.jpg"]],
    )
    back = pickle.loads(pickle.dumps(r))
    assert back.gallery_ids == [["b", "a"]]
    assert back.gallery_paths == [["img/b.jpg", "img/a.jpg"]]
    assert back.query_uncertainty is None
    assert torch.equal(back.indices, r.indices)
    assert "gallery_paths=[['img/b.jpg'" in repr(r)
    scores, indices = r  # still a pair
    assert SearchResult(scores, indices).gallery_paths is None
