"""Token re-ranking equals a brute-force re-score of the same top-K, in memory bounded by K."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from textreid.heads import SparseTokenSimilarity
from textreid.retrieval import SearchResult, topk_search
from textreid.retrieval import token_rerank as token_rerank_module
from textreid.retrieval.token_rerank import TokenReranker

NQ, NG, L, P, D, K = 6, 25, 7, 5, 8, 10


def _data(
    seed: int = 0, ng: int = NG, dtype: torch.dtype = torch.float64
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Queries and a gallery with global vectors, tokens and ragged token masks."""
    gen = torch.Generator().manual_seed(seed)
    q_mask = torch.arange(L) < torch.randint(2, L + 1, (NQ, 1), generator=gen)
    g_mask = torch.arange(P) < torch.randint(1, P + 1, (ng, 1), generator=gen)
    query = {
        "global": torch.randn(NQ, D, generator=gen, dtype=dtype),
        "tokens": torch.randn(NQ, L, D, generator=gen, dtype=dtype),
        "token_mask": q_mask,
    }
    gallery = {
        "global": torch.randn(ng, D, generator=gen, dtype=dtype),
        "tokens": torch.randn(ng, P, D, generator=gen, dtype=dtype),
        "token_mask": g_mask,
    }
    return query, gallery


def _assert_same(got: SearchResult, want: SearchResult) -> None:
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.indices, want.indices)


def _brute_force(
    first: SearchResult,
    query: dict[str, Tensor],
    gallery: dict[str, Tensor],
    head: SparseTokenSimilarity,
    fuse: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """The head on the full ``[Ng, Nq]`` pair matrix, the top-K read off it, a stable sort."""
    q_mask = None if head.include_padding else query["token_mask"]
    full = head(gallery["tokens"], query["tokens"], gallery["token_mask"], q_mask).T
    fused = fuse(first.scores, full.gather(1, first.indices))
    by_index = torch.argsort(first.indices, dim=1)
    ordered = torch.sort(fused.gather(1, by_index), dim=1, descending=True, stable=True)
    return ordered.values, first.indices.gather(1, by_index).gather(1, ordered.indices)


@pytest.mark.parametrize("include_padding", [False, True])
@pytest.mark.parametrize(
    ("fusion", "weight"), [("sum", 1.0), ("sum", 0.3), ("token", 1.0)], ids=str
)
def test_equals_brute_force_rescore_of_the_same_top_k(
    include_padding: bool, fusion: str, weight: float
) -> None:
    query, gallery = _data()
    first = topk_search(query["global"], gallery["global"], K, normalize=True)
    head = SparseTokenSimilarity(temperature=0.5, include_padding=include_padding, chunk_size=None)
    got = TokenReranker(head, fusion=fusion, weight=weight, batch_size=7).rerank(  # type: ignore[arg-type]
        first, query, gallery
    )

    def fuse(c: Tensor, t: Tensor) -> Tensor:
        return t if fusion == "token" else c + weight * t

    scores, indices = _brute_force(first, query, gallery, head, fuse)
    torch.testing.assert_close(got.scores, scores, rtol=0, atol=1e-12)
    assert torch.equal(got.indices, indices)
    # Re-ranking moved some hits (the test would be vacuous otherwise).
    assert not torch.equal(got.indices, first.indices)


def test_block_size_and_gallery_source_do_not_change_the_result() -> None:
    query, gallery = _data(1)
    first = topk_search(query["global"], gallery["global"], K, normalize=False)
    ref = TokenReranker(batch_size=NQ * K).rerank(first, query, gallery)
    requested: list[Tensor] = []

    def recompute(idx: Tensor) -> dict[str, Tensor]:
        requested.append(idx)
        return {"tokens": gallery["tokens"][idx], "token_mask": gallery["token_mask"][idx]}

    for bs in (1, 3, 17, 1000):
        for source in (gallery, recompute):
            got = TokenReranker(batch_size=bs).rerank(first, query, source)
            _assert_same(got, ref)
    # The callable sees each block's distinct candidates once, in increasing order.
    for idx in requested:
        assert torch.equal(idx, torch.unique(idx))


def test_memory_is_bounded_by_k_not_by_the_gallery(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = token_rerank_module._token_math.sparse_token_score
    shapes: list[tuple[int, ...]] = []

    def spy(image_tokens: Tensor, text_tokens: Tensor, *args: object) -> Tensor:
        shapes.extend([tuple(image_tokens.shape), tuple(text_tokens.shape)])
        return kernel(image_tokens, text_tokens, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(token_rerank_module._token_math, "sparse_token_score", spy)

    def largest(ng: int, k: int) -> int:
        shapes.clear()
        query, gallery = _data(2, ng=ng, dtype=torch.float32)
        first = topk_search(query["global"], gallery["global"], k, normalize=False)
        TokenReranker(batch_size=10_000).rerank(first, query, gallery)
        return max(math.prod(s) for s in shapes)

    # The kernel sees one row per query-candidate pair: a 40x larger gallery changes nothing,
    # twice the candidates doubles it.
    small = largest(NG, 4)
    assert small == NQ * 4 * L * D
    assert largest(40 * NG, 4) == small
    assert largest(40 * NG, 8) == 2 * small


def test_blocks_bound_what_is_gathered_and_recomputed() -> None:
    query, gallery = _data(3)
    first = topk_search(query["global"], gallery["global"], K, normalize=False)
    sizes: list[int] = []

    def recompute(idx: Tensor) -> dict[str, Tensor]:
        sizes.append(idx.shape[0])
        return {"tokens": gallery["tokens"][idx]}

    TokenReranker(batch_size=8).rerank(first, query, recompute)
    assert len(sizes) == math.ceil(NQ * K / 8)
    assert max(sizes) <= 8


def test_k_keeps_the_first_hits_and_weight_zero_keeps_the_first_stage() -> None:
    query, gallery = _data(4)
    first = topk_search(query["global"], gallery["global"], K, normalize=False)
    head = SparseTokenSimilarity(include_padding=True)
    full = TokenReranker(head).rerank(
        SearchResult(first.scores[:, :4], first.indices[:, :4]), query, gallery
    )
    part = TokenReranker(head).rerank(first, query, gallery, k=4)
    _assert_same(part, full)
    same = TokenReranker(head, weight=0.0).rerank(first, query, gallery)
    _assert_same(same, first)


def test_padding_is_ignored_through_the_query_mask() -> None:
    query, gallery = _data(5)
    first = topk_search(query["global"], gallery["global"], K, normalize=False)
    noisy = dict(query, tokens=torch.where(query["token_mask"][..., None], query["tokens"], 1e3))
    head = SparseTokenSimilarity(include_padding=False)
    clean = TokenReranker(head).rerank(first, query, gallery)
    got = TokenReranker(head).rerank(first, noisy, gallery)
    _assert_same(got, clean)
    # FMFA's setting scores every position, so the padding then matters.
    fmfa = TokenReranker(SparseTokenSimilarity(include_padding=True))
    assert not torch.equal(fmfa.rerank(first, noisy, gallery).scores, clean.scores)


def test_ties_go_to_the_lower_gallery_index() -> None:
    tokens = torch.randn(1, P, D, dtype=torch.float64).expand(6, P, D)
    gallery = {"tokens": tokens}
    query = {"tokens": torch.randn(2, L, D, dtype=torch.float64)}
    first = SearchResult(torch.zeros(2, 4, dtype=torch.float64), torch.tensor([[5, 3, 1, 0]] * 2))
    assert TokenReranker().rerank(first, query, gallery).indices.tolist() == [[0, 1, 3, 5]] * 2


def test_half_tokens_score_in_float32_and_uncertainties_follow_their_hits() -> None:
    query, gallery = _data(6, dtype=torch.float16)
    first64 = topk_search(query["global"].double(), gallery["global"].double(), K, normalize=False)
    first = SearchResult(
        first64.scores.float(),
        first64.indices,
        torch.arange(NQ, dtype=torch.float32),
        first64.indices.float() * 10,
    )
    got = TokenReranker(fusion="token").rerank(first, query, gallery, k=5)
    assert got.scores.dtype == torch.float32
    assert torch.equal(got.query_uncertainty, first.query_uncertainty)
    assert torch.equal(got.gallery_uncertainty, got.indices.float() * 10)


Make = Callable[[SearchResult, dict[str, Tensor], dict[str, Tensor]], tuple[object, ...]]
"""Turns valid ``(result, query, gallery)`` into the bad arguments of one case."""


def _without(f: dict[str, Tensor], key: str) -> dict[str, Tensor]:
    return {k: v for k, v in f.items() if k != key}


def _nan_tokens(f: dict[str, Tensor]) -> dict[str, Tensor]:
    return dict(f, tokens=f["tokens"].masked_fill(torch.rand(f["tokens"].shape) > 0.5, math.nan))


BAD_INPUTS: list[tuple[Make, type[Exception], str]] = [
    (lambda r, q, g: (tuple(r), q, g), TypeError, "result must be a SearchResult"),
    (lambda r, q, g: (r, q["tokens"], g), TypeError, "query must be a features mapping"),
    (lambda r, q, g: (r, q, 3), TypeError, "gallery must be a features mapping"),
    (lambda r, q, g: (r, _without(q, "tokens"), g), ValueError, "query features lack 'tokens'"),
    (lambda r, q, g: (r, q, _without(g, "tokens")), ValueError, "gallery features lack 'tokens'"),
    (
        lambda r, q, g: (r, {"tokens": q["tokens"][:3]}, g),
        ValueError,
        r"query\['tokens'\] has 3 rows but 6",
    ),
    (
        lambda r, q, g: (r, q, {"tokens": g["tokens"][..., :4]}),
        ValueError,
        r"has width 8 but gallery\['tokens'\] has width 4",
    ),
    (
        lambda r, q, g: (r, q, dict(g, token_mask=g["token_mask"][:, :2])),
        ValueError,
        r"gallery\['token_mask'\] has shape",
    ),
    (
        lambda r, q, g: (r, q, dict(g, token_mask=torch.zeros(NG, P, dtype=torch.bool))),
        ValueError,
        "at least one True",
    ),
    (
        lambda r, q, g: (r, q, {"tokens": g["tokens"][:5]}),
        ValueError,
        "outside the gallery of 5 items",
    ),
    (
        lambda r, q, g: (r, q, lambda idx: {"tokens": g["tokens"][:2]}),
        ValueError,
        r"gallery\(indices\)\['tokens'\] has 2 rows",
    ),
    (
        lambda r, q, g: (r, q, lambda idx: g["tokens"][idx]),
        TypeError,
        r"gallery\(indices\) must be",
    ),
    (
        lambda r, q, g: (r, q, lambda idx: {"tokens": g["tokens"][idx, :, :4]}),
        ValueError,
        r"gallery\(indices\)\['tokens'\] has width 4",
    ),
    (lambda r, q, g: (r, q, _nan_tokens(g)), ValueError, "non-finite"),
    (lambda r, q, g: (r, _nan_tokens(q), g), ValueError, "non-finite"),
    (lambda r, q, g: (r, {"tokens": q["tokens"].long()}, g), TypeError, "floating dtype"),
    (lambda r, q, g: (r, dict(q, token_mask=q["token_mask"].long()), g), TypeError, "bool tensor"),
]


@pytest.mark.parametrize(("make", "error", "match"), BAD_INPUTS)
def test_bad_inputs_are_refused_with_a_clear_error(
    make: Make,
    error: type[Exception],
    match: str,
) -> None:
    query, gallery = _data(7)
    first = topk_search(query["global"], gallery["global"], K, normalize=False)
    result, q, g = make(first, query, gallery)
    with pytest.raises(error, match=match) as info:
        TokenReranker().rerank(result, q, g)  # type: ignore[arg-type]
    assert str(info.value).startswith("TokenReranker.rerank: ")


def test_bad_settings_and_k_are_refused() -> None:
    with pytest.raises(TypeError, match="TokenReranker: head must be a SparseTokenSimilarity"):
        TokenReranker(torch.nn.Identity())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TokenReranker: fusion"):
        TokenReranker(fusion="max")  # type: ignore[arg-type]
    for weight in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="TokenReranker: weight"):
            TokenReranker(weight=weight)
    with pytest.raises(ValueError, match="TokenReranker: batch_size"):
        TokenReranker(batch_size=0)
    query, gallery = _data(7)
    result = topk_search(query["global"], gallery["global"], K, normalize=False)
    for k in (0, K + 1, 2.0):
        with pytest.raises(
            ValueError, match=r"TokenReranker.rerank: k must be an int in \[1, K=10\]"
        ):
            TokenReranker().rerank(result, query, gallery, k=k)  # type: ignore[arg-type]


def test_topk_search_rerank_equals_search_then_rerank() -> None:
    query, gallery = _data(8)
    reranker = TokenReranker(SparseTokenSimilarity(include_padding=False), weight=0.5)
    got = topk_search(query, gallery, K, normalize=True, rerank=reranker)
    first = topk_search(query["global"], gallery["global"], K, normalize=True)
    _assert_same(got, reranker.rerank(first, query, gallery))


def test_topk_search_checks_the_tokens_before_searching(monkeypatch: pytest.MonkeyPatch) -> None:
    query, gallery = _data(9)

    def no_search(*args: object) -> None:
        raise AssertionError("the global search ran before the re-ranker's checks")

    monkeypatch.setattr(token_rerank_module.TokenReranker, "rerank", no_search)
    cases = [
        (query["global"], gallery, "query features lack 'tokens'"),
        (query, _without(gallery, "tokens"), "gallery features lack 'tokens'"),
        (query, dict(gallery, tokens=gallery["tokens"][..., :3]), "has width 8 but"),
    ]
    for q, g, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            topk_search(q, g, K, rerank=TokenReranker(), normalize=False)
        assert str(info.value).startswith("topk_search: ")
    with pytest.raises(TypeError, match="topk_search: rerank must be a re-ranker"):
        topk_search(query, gallery, K, rerank=lambda r: r, normalize=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"TokenReranker\.check: query features lack"):
        TokenReranker().check(_without(query, "tokens"), gallery)
