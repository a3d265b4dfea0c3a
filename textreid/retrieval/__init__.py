"""Exact retrieval at any gallery size: chunked scores, top-k search, metrics, re-ranking.

Nothing here materialises the full ``[Nq, Ng]`` score matrix: scores stream over query blocks
and gallery chunks on the device the features live on. Ties are ordered by lower gallery
index (a stable descending sort), everywhere.
"""

from __future__ import annotations

from textreid.retrieval.distributed import sharded_evaluate, sharded_topk_search
from textreid.retrieval.index import GalleryIndex, ShardedIndexWriter
from textreid.retrieval.metrics import RetrievalMetrics, evaluate
from textreid.retrieval.rerank import k_reciprocal_rerank, rerank_topk
from textreid.retrieval.scorers import (
    CosineScorer,
    Features,
    GaussianScorer,
    PartScorer,
    Scorer,
    as_features,
    cat_rows,
    features_to,
    list_scorers,
    num_rows,
    register_scorer,
    scorer_from_config,
    slice_rows,
)
from textreid.retrieval.scores import ScoreChunk, cosine_scores
from textreid.retrieval.search import Reranker, SearchResult, topk_search
from textreid.retrieval.token_rerank import GalleryTokens, TokenFusion, TokenReranker

__all__ = [
    "CosineScorer",
    "Features",
    "GalleryIndex",
    "GalleryTokens",
    "GaussianScorer",
    "PartScorer",
    "Reranker",
    "RetrievalMetrics",
    "ScoreChunk",
    "Scorer",
    "SearchResult",
    "ShardedIndexWriter",
    "TokenFusion",
    "TokenReranker",
    "as_features",
    "cat_rows",
    "cosine_scores",
    "evaluate",
    "features_to",
    "k_reciprocal_rerank",
    "list_scorers",
    "num_rows",
    "register_scorer",
    "rerank_topk",
    "scorer_from_config",
    "sharded_evaluate",
    "sharded_topk_search",
    "slice_rows",
    "topk_search",
]
