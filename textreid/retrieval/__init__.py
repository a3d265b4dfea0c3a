"""Exact retrieval at any gallery size: chunked scores, top-k search, metrics, re-ranking.

Nothing here materialises the full ``[Nq, Ng]`` score matrix: scores stream over query blocks
and gallery chunks on the device the features live on. Ties are ordered by lower gallery
index (a stable descending sort), everywhere.
"""

from __future__ import annotations

from textreid.retrieval.index import GalleryIndex
from textreid.retrieval.metrics import RetrievalMetrics, evaluate
from textreid.retrieval.rerank import k_reciprocal_rerank, rerank_topk
from textreid.retrieval.scores import ScoreChunk, cosine_scores
from textreid.retrieval.search import SearchResult, topk_search

__all__ = [
    "GalleryIndex",
    "RetrievalMetrics",
    "ScoreChunk",
    "SearchResult",
    "cosine_scores",
    "evaluate",
    "k_reciprocal_rerank",
    "rerank_topk",
    "topk_search",
]
