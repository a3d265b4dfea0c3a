"""Scorers: each against a brute-force score matrix, streamed search and metrics through them,
chunk invariance, flat memory in the gallery size, validation errors, configs and the index."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.retrieval._helpers import stable_topk
from textreid.heads import GAUSSIAN_DISTANCES, GaussianEmbedding, gaussian_distance
from textreid.retrieval import (
    CosineScorer,
    Features,
    GalleryIndex,
    GaussianScorer,
    PartScorer,
    Scorer,
    SearchResult,
    as_features,
    cat_rows,
    evaluate,
    features_to,
    list_scorers,
    num_rows,
    register_scorer,
    scorer_from_config,
    slice_rows,
    topk_search,
)
from textreid.retrieval.scorers import _SCORERS

FILE = "gallery_index.safetensors"


def _gaussian(n: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "mean": torch.randn(n, d, generator=gen, dtype=dtype),
        "log_var": (0.5 * torch.randn(n, d, generator=gen) - 1.0).to(dtype),
    }


def _parts(n: int, seed: int, coarse: bool = True) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    f = {"global": torch.randn(n, 6, generator=gen), "parts": torch.randn(n, 3, 6, generator=gen)}
    if coarse:
        f["coarse"] = torch.randn(n, 2, 6, generator=gen)
    return f


# --- brute force: one pair at a time, written from the formulas -------------------------------


def _brute_gaussian(q: Features, g: Features, distance: str) -> Tensor:
    """``-d`` per pair in float64; csd and KL from their formulas, the rest from the head."""
    out = torch.empty(num_rows(q), num_rows(g), dtype=torch.float64)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            mq, lq = q["mean"][i].double(), q["log_var"][i].double()
            mg, lg = g["mean"][j].double(), g["log_var"][j].double()
            if distance == "csd":
                d = (mq - mg).pow(2).sum() + lq.exp().sum() + lg.exp().sum()
            elif distance == "kl":
                d = 0.5 * ((lq - lg).exp() + (mq - mg).pow(2) / lg.exp() - 1 + lg - lq).sum()
            else:
                x = GaussianEmbedding(mq[None], lq[None])
                y = GaussianEmbedding(mg[None], lg[None])
                d = gaussian_distance(x, y, distance)[0, 0]  # type: ignore[arg-type]
            out[i, j] = -d
    return out


def _brute_parts(q: Features, g: Features, wp: float, wc: float) -> Tensor:
    out = torch.empty(num_rows(q), num_rows(g), dtype=torch.float64)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            s = F.cosine_similarity(q["global"][i].double(), g["global"][j].double(), dim=0)
            parts = F.cosine_similarity(q["parts"][i].double(), g["parts"][j].double(), dim=-1)
            s = s + wp * parts.mean()
            if wc:
                coarse = F.cosine_similarity(
                    q["coarse"][i].double(), g["coarse"][j].double(), dim=-1
                )
                s = s + wc * coarse.mean()
            out[i, j] = s
    return out


@pytest.mark.parametrize("distance", GAUSSIAN_DISTANCES)
def test_gaussian_search_equals_brute_force(distance: str) -> None:
    q, g = _gaussian(7, 5, 0), _gaussian(40, 5, 1)
    scorer = GaussianScorer(distance=distance)  # type: ignore[arg-type]
    ref = _brute_gaussian(q, g, distance)
    torch.testing.assert_close(scorer(q, g).double(), ref, rtol=1e-5, atol=1e-5)
    got = topk_search(q, g, 6, scorer=scorer, chunk_size=9, query_block=3)
    want = stable_topk(ref, 6)
    assert torch.equal(got.indices, want.indices)
    torch.testing.assert_close(got.scores.double(), want.scores, rtol=1e-5, atol=1e-5)
    assert got.scores.dtype == torch.float32


@pytest.mark.parametrize(("wp", "wc"), [(1.0, 0.0), (0.5, 2.0), (0.0, 1.0)])
def test_part_search_equals_brute_force(wp: float, wc: float) -> None:
    q, g = _parts(5, 2), _parts(30, 3)
    scorer = PartScorer(part_weight=wp, coarse_weight=wc)
    ref = _brute_parts(q, g, wp, wc)
    torch.testing.assert_close(scorer(q, g).double(), ref, rtol=1e-6, atol=1e-6)
    got = topk_search(q, g, 5, scorer=scorer, chunk_size=7, query_block=2)
    assert torch.equal(got.indices, stable_topk(ref, 5).indices)
    assert got.query_uncertainty is None
    assert got.gallery_uncertainty is None


def test_cosine_scorer_is_the_plain_cosine_search_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(4)
    q, g = torch.randn(70, 16, generator=gen), torch.randn(300, 16, generator=gen)
    plain = topk_search(q, g, 10, normalize=True, chunk_size=64)
    via = topk_search({"global": q}, {"global": g}, 10, scorer=CosineScorer(), chunk_size=64)
    assert torch.equal(plain.scores, via.scores)
    assert torch.equal(plain.indices, via.indices)
    ref = stable_topk(F.normalize(q.double(), dim=1) @ F.normalize(g.double(), dim=1).T, 10)
    assert torch.equal(via.indices, ref.indices)
    inner = topk_search(q, {"global": g}, 10, scorer=CosineScorer(normalize=False))
    assert torch.equal(inner.indices, topk_search(q, g, 10, normalize=False).indices)
    # Extra keys (stored tokens for re-ranking) ride along untouched.
    with_tokens = {"global": g, "tokens": torch.randn(300, 4, 16)}
    assert torch.equal(
        topk_search(q, with_tokens, 10, normalize=False).indices,
        topk_search(q, g, 10, normalize=False).indices,
    )


def test_generic_path_keeps_the_tie_rule() -> None:
    # KL is elementwise (no BLAS), so duplicated items score bit-identically across chunks.
    g = _gaussian(6, 4, 5)
    dup = cat_rows([g, g, g])  # item j also at j + 6 and j + 12, in other chunks
    q = _gaussian(4, 4, 6)
    got = topk_search(q, dup, 9, scorer=GaussianScorer(distance="kl"), chunk_size=5)
    ref = stable_topk(GaussianScorer(distance="kl")(q, dup), 9)
    assert torch.equal(got.indices, ref.indices)
    for row in got.indices.tolist():  # each best item comes with its copies, lowest first
        assert row[:3] == [row[0], row[0] + 6, row[0] + 12]


@pytest.mark.parametrize(
    "scorer",
    [GaussianScorer(), GaussianScorer(distance="bhattacharyya"), PartScorer(coarse_weight=1.0)],
    ids=repr,
)
def test_chunk_and_block_sizes_do_not_change_the_hits(scorer: Scorer) -> None:
    if isinstance(scorer, GaussianScorer):
        q, g = _gaussian(11, 6, 7), _gaussian(97, 6, 8)
    else:
        q, g = _parts(11, 7), _parts(97, 8)
    base = topk_search(q, g, 8, scorer=scorer)
    for chunk, block in [(1, 1), (8, 3), (13, 11), (97, 4), (500, 500)]:
        got = topk_search(q, g, 8, scorer=scorer, chunk_size=chunk, query_block=block)
        assert torch.equal(got.indices, base.indices), (chunk, block)
        torch.testing.assert_close(got.scores, base.scores, rtol=1e-6, atol=1e-6)


def test_gaussian_uncertainties_are_the_embeddings_uncertainty() -> None:
    q, g = _gaussian(9, 5, 9), _gaussian(50, 5, 10)
    got = topk_search(q, g, 4, scorer=GaussianScorer(), chunk_size=16, query_block=4)
    assert got.query_uncertainty is not None
    assert got.gallery_uncertainty is not None
    q_ref = GaussianEmbedding(q["mean"], q["log_var"]).uncertainty()
    g_ref = GaussianEmbedding(g["mean"], g["log_var"]).uncertainty()
    assert torch.equal(got.query_uncertainty, q_ref)
    assert torch.equal(got.gallery_uncertainty, g_ref[got.indices])
    # By hand: the mean variance of an item.
    assert got.query_uncertainty[0].item() == pytest.approx(q["log_var"][0].exp().mean().item())
    # The result is still the pair it always was.
    scores, indices = got
    assert scores is got.scores
    assert indices is got.indices


def test_uncertainties_gather_at_most_a_chunk_of_hits_at_a_time() -> None:
    q, g = _gaussian(12, 3, 25), _gaussian(40, 3, 26)
    spy = _Spy()
    got = topk_search(q, g, 5, scorer=spy, chunk_size=16, query_block=5)
    assert spy.uncertain == [12, 16, 16, 16, 12]  # queries, then 60 hits in gathers of 16
    ref = topk_search(q, g, 5, scorer=GaussianScorer())
    assert got.gallery_uncertainty is not None
    assert ref.gallery_uncertainty is not None
    assert torch.equal(got.gallery_uncertainty, ref.gallery_uncertainty)


def test_search_result_keeps_its_uncertainties_through_pickle() -> None:
    import pickle

    r = SearchResult(torch.ones(2, 1), torch.zeros(2, 1, dtype=torch.long), torch.ones(2))
    back = pickle.loads(pickle.dumps(r))
    assert back.query_uncertainty is not None
    assert torch.equal(back.query_uncertainty, torch.ones(2))
    assert back.gallery_uncertainty is None
    assert "query_uncertainty" in repr(r)


def test_half_inputs_score_in_float32() -> None:
    q, g = _gaussian(3, 4, 11, torch.float16), _gaussian(20, 4, 12, torch.float16)
    got = topk_search(q, g, 3, scorer=GaussianScorer())
    assert got.scores.dtype == torch.float32
    ref = topk_search(
        features_to(q, dtype=torch.float32),
        features_to(g, dtype=torch.float32),
        3,
        scorer=GaussianScorer(),
    )
    assert torch.equal(got.indices, ref.indices)


# --- metrics --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scorer",
    [GaussianScorer(), GaussianScorer(distance="kl"), PartScorer(part_weight=0.7)],
    ids=repr,
)
def test_evaluate_through_a_scorer_equals_evaluate_of_its_score_matrix(scorer: Scorer) -> None:
    gen = torch.Generator().manual_seed(13)
    if isinstance(scorer, GaussianScorer):
        q, g = _gaussian(40, 6, 14), _gaussian(120, 6, 15)
    else:
        q, g = _parts(40, 14, coarse=False), _parts(120, 15, coarse=False)
    qp, gp = torch.randint(0, 25, (40,), generator=gen), torch.randint(0, 25, (120,), generator=gen)
    ref = evaluate(scores=scorer(q, g), query_pids=qp, gallery_pids=gp, return_ranks=True)
    for chunk, block in [(17, 7), (8192, 1024)]:
        got = evaluate(
            q,
            g,
            query_pids=qp,
            gallery_pids=gp,
            scorer=scorer,
            chunk_size=chunk,
            query_block=block,
            return_ranks=True,
        )
        assert got == ref
        assert got.first_positive_ranks is not None
        assert ref.first_positive_ranks is not None
        assert torch.equal(got.first_positive_ranks, ref.first_positive_ranks)


def test_evaluate_with_a_cosine_scorer_is_the_plain_call() -> None:
    gen = torch.Generator().manual_seed(16)
    q, g = torch.randn(50, 8, generator=gen), torch.randn(90, 8, generator=gen)
    qp, gp = torch.randint(0, 30, (50,), generator=gen), torch.randint(0, 30, (90,), generator=gen)
    plain = evaluate(q, g, query_pids=qp, gallery_pids=gp)
    assert (
        evaluate({"global": q}, g, query_pids=qp, gallery_pids=gp, scorer=CosineScorer()) == plain
    )
    assert evaluate({"global": q}, {"global": g}, query_pids=qp, gallery_pids=gp) == plain


# --- flat memory in the gallery size -----------------------------------------------------------


class _Spy(GaussianScorer):
    """Records the row counts each call sees."""

    kind = "gaussian"

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[tuple[int, int]] = []
        self.prepared: list[int] = []
        self.uncertain: list[int] = []
        self.pairs: list[int] = []
        self.in_pairs = False

    def prepare(self, features: Features, side: Any) -> dict[str, Tensor]:
        self.prepared.append(num_rows(features))
        return super().prepare(features, side)

    def score(self, query: Features, gallery: Features) -> Tensor:
        if not self.in_pairs:
            self.blocks.append((num_rows(query), num_rows(gallery)))
        return super().score(query, gallery)

    def score_pairs(self, query: Features, gallery: Features) -> Tensor:
        self.pairs.append(num_rows(query))
        self.in_pairs = True
        try:
            return super().score_pairs(query, gallery)
        finally:
            self.in_pairs = False

    def uncertainty(self, features: Features, side: Any) -> Tensor:
        self.uncertain.append(num_rows(features))
        return super().uncertainty(features, side)


@pytest.mark.parametrize("ng", [20_000, 80_000])
def test_memory_is_bounded_by_the_blocks_not_the_gallery(ng: int) -> None:
    q = _gaussian(12, 2, 17)
    gen = torch.Generator().manual_seed(18)
    g = {"mean": torch.randn(ng, 2, generator=gen), "log_var": torch.zeros(ng, 2)}
    spy = _Spy()
    hits = topk_search(q, g, 5, scorer=spy, chunk_size=4096, query_block=8)
    # Every score block is at most query_block x chunk_size, whatever the gallery size; the
    # gallery is visited once, chunk by chunk.
    assert max(b for b, _ in spy.blocks) == 8
    assert max(c for _, c in spy.blocks) == 4096
    assert sum(c for b, c in spy.blocks if b == 8) == ng
    # Uncertainties read the queries and the k hits of each, never the gallery.
    assert spy.uncertain == [12, 12 * 5]
    assert hits.gallery_uncertainty is not None
    assert hits.gallery_uncertainty.shape == (12, 5)

    spy = _Spy()
    qp, gp = torch.arange(12), torch.arange(ng) % 1000
    evaluate(q, g, query_pids=qp, gallery_pids=gp, scorer=spy, chunk_size=4096, query_block=8)
    assert max(b for b, _ in spy.blocks) == 8
    assert max(c for _, c in spy.blocks) == 4096
    assert max(spy.pairs) <= 4096  # the positives are scored chunk_size pairs at a time


# --- validation -----------------------------------------------------------------------------


def test_missing_key_names_the_argument_and_the_keys() -> None:
    q, g = _gaussian(2, 4, 19), _gaussian(5, 4, 20)
    with pytest.raises(
        ValueError,
        match=r"topk_search: gallery features lack 'log_var': GaussianScorer \(kind 'gaussian'\) "
        r"needs \['mean', 'log_var'\], got \['mean'\]",
    ):
        topk_search(q, {"mean": g["mean"]}, 2, scorer=GaussianScorer())
    with pytest.raises(ValueError, match=r"evaluate: query_feats features lack 'parts'"):
        evaluate(
            {"global": torch.randn(2, 4)},
            _parts(3, 1),
            query_pids=torch.arange(2),
            gallery_pids=torch.arange(3),
            scorer=PartScorer(),
        )
    with pytest.raises(ValueError, match=r"query features lack 'coarse'"):
        topk_search(_parts(2, 1, coarse=False), _parts(3, 2), 1, scorer=PartScorer(coarse_weight=1))
    # Without a scorer only global features are compared: say what to pass instead.
    with pytest.raises(ValueError, match=r"topk_search: query features have no 'global' entry"):
        topk_search(q, g, 2, normalize=False)


def test_row_count_mismatch_names_every_tensor() -> None:
    bad = {"mean": torch.randn(5, 4), "log_var": torch.randn(4, 4)}
    with pytest.raises(
        ValueError,
        match=r"topk_search: the tensors of gallery .* differ \('mean': 5, 'log_var': 4\)",
    ):
        topk_search(_gaussian(2, 4, 0), bad, 1, scorer=GaussianScorer())
    with pytest.raises(ValueError, match=r"num_rows: the tensors of features .* differ"):
        num_rows({"a": torch.zeros(2), "b": torch.zeros(3)})


def test_wrong_rank_and_shapes_are_refused() -> None:
    flat = {"global": torch.randn(3, 6), "parts": torch.randn(3, 6)}
    with pytest.raises(ValueError, match=r"topk_search: query\['parts'\] must be 3-D \(N, P, D\)"):
        topk_search(flat, _parts(4, 0), 1, scorer=PartScorer())
    q = {"global": torch.randn(2, 6), "parts": torch.randn(2, 4, 6)}
    with pytest.raises(ValueError, match=r"query\['parts'\] has shape \(2, 4, 6\) but gallery"):
        topk_search(q, _parts(4, 0), 1, scorer=PartScorer())
    with pytest.raises(
        ValueError, match=r"query\['mean'\] has shape \(2, 4\) but query\['log_var'\]"
    ):
        topk_search(
            {"mean": torch.randn(2, 4), "log_var": torch.randn(2, 3)},
            _gaussian(4, 4, 0),
            1,
            scorer=GaussianScorer(),
        )
    with pytest.raises(TypeError, match=r"gallery\['mean'\] has dtype torch.int64"):
        topk_search(
            _gaussian(2, 4, 0),
            {"mean": torch.zeros(3, 4, dtype=torch.long), "log_var": torch.zeros(3, 4)},
            1,
            scorer=GaussianScorer(),
        )
    nan = _gaussian(2, 4, 0)
    nan["mean"][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"query\['mean'\] contains 1 non-finite"):
        topk_search(nan, _gaussian(4, 4, 0), 1, scorer=GaussianScorer())


def test_container_errors() -> None:
    with pytest.raises(TypeError, match=r"topk_search: query must be a tensor or a mapping"):
        topk_search([[1.0]], {"global": torch.ones(1, 1)}, 1, scorer=GaussianScorer())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"as_features: features\['x'\] must be a torch.Tensor"):
        as_features({"x": [1.0]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"the key 'a.b'; a feature name is an identifier"):
        as_features({"a.b": torch.zeros(1, 1)})
    with pytest.raises(TypeError, match=r"a key of type int"):
        as_features({1: torch.zeros(1, 1)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"is an empty mapping"):
        as_features({})
    with pytest.raises(TypeError, match=r"topk_search: scorer must be a textreid.retrieval.Scorer"):
        topk_search(torch.ones(1, 1), torch.ones(1, 1), 1, scorer="cosine")  # type: ignore[arg-type]


def test_options_that_only_cosine_has_are_refused_for_other_scorers() -> None:
    q, g = _gaussian(2, 4, 0), _gaussian(5, 4, 1)
    with pytest.raises(ValueError, match=r'backend="faiss" and screen="bf16" speed up cosine'):
        topk_search(q, g, 2, scorer=GaussianScorer(), backend="faiss")
    with pytest.raises(ValueError, match=r'GaussianScorer searches with backend="torch"'):
        topk_search(q, g, 2, scorer=GaussianScorer(), screen="bf16")
    with pytest.raises(ValueError, match=r"normalize=True applies to searches without scorer="):
        topk_search(q, g, 2, scorer=GaussianScorer(), normalize=True)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, Ng=5\]"):
        topk_search(q, g, 6, scorer=GaussianScorer())
    with pytest.raises(ValueError, match=r"evaluate: scorer= scores features"):
        evaluate(
            scores=torch.zeros(1, 1),
            query_pids=torch.zeros(1, dtype=torch.long),
            gallery_pids=torch.zeros(1, dtype=torch.long),
            scorer=GaussianScorer(),
        )


class _BadScorer(CosineScorer):
    kind = "cosine"

    def score(self, query: Features, gallery: Features) -> Tensor:
        return torch.zeros(1)


def test_a_scorer_returning_the_wrong_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"_BadScorer.score must return floating scores of shape"):
        topk_search(torch.ones(2, 3), torch.ones(4, 3), 1, scorer=_BadScorer())


# --- configs and the registry ------------------------------------------------------------------


@pytest.mark.parametrize(
    "scorer",
    [
        CosineScorer(),
        CosineScorer(normalize=False),
        GaussianScorer(distance="elk"),
        PartScorer(part_weight=0.25, coarse_weight=2.0),
    ],
    ids=repr,
)
def test_config_round_trip(scorer: Scorer) -> None:
    config = scorer.to_config()
    assert json.loads(json.dumps(config)) == config
    assert config["kind"] == scorer.kind
    back = scorer_from_config(config)
    assert back == scorer
    assert type(back) is type(scorer)
    assert hash(back) == hash(scorer)
    assert back != GaussianScorer(distance="wasserstein")


def test_bad_configs_name_the_source_and_the_remedy() -> None:
    with pytest.raises(
        ValueError,
        match=r"the scorer config in model.json: unknown scorer "
        r"'gausian'.* did you mean 'gaussian'\?. Register the scorer",
    ):
        scorer_from_config({"kind": "gausian"}, source="model.json")
    with pytest.raises(ValueError, match=r"'gaussian' scorer config in x has settings .* refuses"):
        scorer_from_config({"kind": "gaussian", "distance": "euclid"}, source="x")
    with pytest.raises(ValueError, match=r"settings \{'weight': 1\} that CosineScorer refuses"):
        scorer_from_config({"kind": "cosine", "weight": 1})
    with pytest.raises(ValueError, match=r"has no str 'kind'"):
        scorer_from_config({"distance": "kl"})
    with pytest.raises(ValueError, match=r"more than 65536"):
        scorer_from_config({"kind": "cosine", "pad": "x" * 70_000})
    with pytest.raises(ValueError, match="part_weight must be >= 0"):
        PartScorer(part_weight=-1)
    with pytest.raises(ValueError, match="coarse_weight must be a finite number"):
        PartScorer(coarse_weight=math.inf)


class _Euclid(Scorer):
    kind: ClassVar[str] = "neg_euclid"
    query_keys: ClassVar[tuple[str, ...]] = ("global",)
    gallery_keys: ClassVar[tuple[str, ...]] = ("global",)
    key_dims: ClassVar[Mapping[str, str]] = {"global": "(N, D)"}

    def score(self, query: Features, gallery: Features) -> Tensor:
        return -torch.cdist(query["global"].float(), gallery["global"].float())


def test_a_user_scorer_registers_searches_and_saves(tmp_path: Path) -> None:
    assert "neg_euclid" not in list_scorers()
    with pytest.raises(ValueError, match=r"_Euclid.kind is 'neg_euclid', but it is being"):
        register_scorer("euclid", _Euclid)
    with pytest.raises(TypeError, match="cls must be a Scorer subclass"):
        register_scorer("x", dict)  # type: ignore[arg-type]
    g = torch.randn(30, 4)
    index = GalleryIndex(g, scorer=_Euclid())
    index.save(tmp_path)
    with pytest.raises(
        ValueError, match=rf"config in {tmp_path / FILE}: unknown scorer 'neg_euclid'.*Register"
    ):
        GalleryIndex.load(tmp_path)
    register_scorer("neg_euclid", _Euclid)
    try:
        assert "neg_euclid" in list_scorers()
        with pytest.raises(ValueError, match="already registered"):
            register_scorer("neg_euclid", _Euclid)
        back = GalleryIndex.load(tmp_path)
        q = torch.randn(3, 4)
        got = back.search(q, 4)
        assert torch.equal(got.indices, stable_topk(-torch.cdist(q, g), 4).indices)
    finally:
        _SCORERS.unregister("neg_euclid", fn="test")


# --- the gallery index ---------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("kind", ["gaussian", "parts"])
def test_index_round_trip_with_scorer_features(tmp_path: Path, kind: str, mmap: bool) -> None:
    if kind == "gaussian":
        feats: dict[str, Tensor] = _gaussian(25, 6, 21)
        scorer: Scorer = GaussianScorer(distance="bhattacharyya")
        q: dict[str, Tensor] = _gaussian(4, 6, 22)
    else:
        feats, scorer, q = _parts(25, 21), PartScorer(coarse_weight=0.5), _parts(4, 22)
        feats["token_mask"] = torch.rand(25, 7, generator=torch.Generator().manual_seed(0)) > 0.5
    index = GalleryIndex(
        slice_rows(feats, 0, 10),
        torch.arange(10),
        [f"i{j}" for j in range(10)],
        scorer=scorer,
        model_fingerprint="f" * 64,
    )
    index.add(slice_rows(feats, 10, 25), torch.arange(10, 25), [f"i{j}" for j in range(10, 25)])
    index.save(tmp_path)
    back = GalleryIndex.load(tmp_path, mmap=mmap)
    assert back.scorer == scorer
    assert back.model_fingerprint == "f" * 64
    assert back.source == tmp_path / FILE
    assert set(back.feature_map) == set(feats)
    for key, t in feats.items():
        assert back.feature_map[key].dtype == t.dtype
        assert torch.equal(back.feature_map[key], t)
    assert back.ids is not None
    assert torch.equal(back.ids, torch.arange(25))
    assert back.paths == [f"i{j}" for j in range(25)]
    got, ref = back.search(q, 5), topk_search(q, feats, 5, scorer=scorer)
    assert torch.equal(got.indices, ref.indices)
    assert torch.equal(got.scores, ref.scores)
    assert back.paths_of(got)[0][0] == f"i{int(got.indices[0, 0])}"
    header = json.loads(
        (tmp_path / FILE).read_bytes()[8:][
            : int.from_bytes((tmp_path / FILE).read_bytes()[:8], "little")
        ]
    )
    assert header["__metadata__"]["format_version"] == "3"
    assert json.loads(header["__metadata__"]["scorer"]) == scorer.to_config()


def test_a_plain_index_is_still_written_as_format_2(tmp_path: Path) -> None:
    GalleryIndex(torch.randn(3, 4)).save(tmp_path)
    raw = (tmp_path / FILE).read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"]["format_version"] == "2"
    assert "features" in header
    GalleryIndex(torch.randn(3, 4), scorer=CosineScorer()).save(tmp_path)
    back = GalleryIndex.load(tmp_path)
    assert back.scorer == CosineScorer()
    assert back.features.shape == (3, 4)


def test_index_search_refuses_a_scorer_of_another_kind(tmp_path: Path) -> None:
    GalleryIndex(_gaussian(6, 4, 23), scorer=GaussianScorer()).save(tmp_path)
    index = GalleryIndex.load(tmp_path)
    with pytest.raises(
        ValueError,
        match=rf"GalleryIndex.search: the gallery index {tmp_path / FILE} holds features for a "
        r"'gaussian' scorer, but scorer= is CosineScorer.*index the gallery again",
    ):
        index.search(torch.randn(1, 4), 2, scorer=CosineScorer())
    # Another distance is the same kind: chosen at search time on the same features.
    q = _gaussian(2, 4, 24)
    kl = index.search(q, 3, scorer=GaussianScorer(distance="kl"))
    assert torch.equal(
        kl.indices,
        topk_search(q, index.feature_map, 3, scorer=GaussianScorer(distance="kl")).indices,
    )
    with pytest.raises(ValueError, match=r"holds \['log_var', 'mean'\], no 'global' features"):
        _ = index.features


def test_index_add_checks_features_against_the_index() -> None:
    index = GalleryIndex(_gaussian(3, 4, 0), scorer=GaussianScorer())
    with pytest.raises(ValueError, match=r"GalleryIndex.add: feats features lack 'log_var'"):
        index.add({"mean": torch.randn(2, 4)})
    with pytest.raises(
        ValueError, match=r"the index's 'mean' has width 4 but feats\['mean'\] has width 5"
    ):
        index.add(_gaussian(2, 5, 0))
    with pytest.raises(ValueError, match=r"holds the features \['log_var', 'mean'\] but feats has"):
        index.add({**_gaussian(2, 4, 0), "extra": torch.zeros(2, 1)})
    parts = GalleryIndex(_parts(2, 0))
    with pytest.raises(ValueError, match=r"the index's 'parts' has rows of shape \(3, 6\) but"):
        parts.add({**_parts(1, 0), "parts": torch.randn(1, 2, 6)})
    with pytest.raises(ValueError, match=r"model_fingerprint must have 1 to 256 characters"):
        GalleryIndex(model_fingerprint="")
    with pytest.raises(TypeError, match=r"GalleryIndex: scorer must be a textreid"):
        GalleryIndex(scorer="gaussian")  # type: ignore[arg-type]


def _rewrite(path: Path, edit: Any) -> None:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8 : 8 + n]), bytearray(raw[8 + n :])
    edit(header, data)
    blob = json.dumps(header).encode()
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(data))


def _set_meta(key: str, value: str) -> Any:
    return lambda h, d: h["__metadata__"].__setitem__(key, value)


def _poke_mask(h: dict[str, Any], d: bytearray) -> None:
    d[h["features.token_mask"]["data_offsets"][0]] = 7


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set_meta("scorer", '{"kind": "parts", "part_weight": 1.0, "coarse_weight": 1.0}'),
            r"its features do not fit its own scorer: .* lack 'coarse'",
        ),
        (_set_meta("scorer", '{"kind": "gaussian"'), r"the scorer config of .* is not valid JSON"),
        (_set_meta("scorer", '{"kind": "parts", "part_weight": -2}'), r"PartScorer refuses"),
        (_set_meta("model_fingerprint", "x" * 300), r"model_fingerprint has 300 characters"),
        (
            lambda h, d: h.__setitem__("features.a-b", h.pop("features.parts")),
            r"the key 'a-b'; a feature name is an identifier",
        ),
        (
            lambda h, d: h["features.parts"].__setitem__("dtype", "I32"),
            r"'features.parts' has dtype I32; features are",
        ),
        (_poke_mask, r"'features.token_mask' is BOOL but holds bytes other than 0 and 1"),
    ],
    ids=["keys", "json", "settings", "fingerprint", "name", "dtype", "bool"],
)
def test_corrupt_v3_files_are_refused_naming_the_file(
    tmp_path: Path, edit: Any, message: str
) -> None:
    feats = {**_parts(4, 0, coarse=False), "token_mask": torch.ones(4, 3, dtype=torch.bool)}
    GalleryIndex(feats, scorer=PartScorer(), model_fingerprint="abc").save(tmp_path)
    _rewrite(tmp_path / FILE, edit)
    with pytest.raises(ValueError, match=message) as info:
        GalleryIndex.load(tmp_path, mmap=True)
    assert str(tmp_path / FILE) in str(info.value)


def test_rows_of_v3_feature_tensors_must_agree(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"features.mean": torch.zeros(3, 2), "features.log_var": torch.zeros(2, 2)}
    meta = {"format": "textreid.GalleryIndex", "format_version": "3"}
    save_file(tensors, str(tmp_path / FILE), metadata=meta)
    with pytest.raises(ValueError, match=r"feature tensors have different row counts"):
        GalleryIndex.load(tmp_path)
    save_file({"ids": torch.arange(2)}, str(tmp_path / FILE), metadata=meta)
    with pytest.raises(ValueError, match=r"it has no 'features.<name>' tensor"):
        GalleryIndex.load(tmp_path)


def test_an_index_from_another_model_is_refused_naming_the_file(tmp_path: Path) -> None:
    from PIL import Image

    from textreid import Retriever
    from textreid.models import create_model

    def retriever(seed: int) -> Retriever:
        torch.manual_seed(seed)
        return Retriever(create_model("tiny", image_size=(64, 32)))

    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = torch.randint(0, 256, (40, 20, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"img_{i}.png")
    a, b = retriever(0), retriever(1)
    a.index_images(tmp_path).save(tmp_path / "index")
    index = GalleryIndex.load(tmp_path / "index")
    assert index.model_fingerprint == a.model_fingerprint != b.model_fingerprint
    assert len(a.search("a man in a red coat", index, k=2).indices[0]) == 2
    with pytest.raises(
        ValueError,
        match=rf"the gallery index {tmp_path / 'index' / FILE} was built by another model.*"
        r"Index the images again with this retriever",
    ):
        b.search("a man in a red coat", index, k=2)
