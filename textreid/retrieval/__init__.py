"""Exact retrieval at any gallery size: chunked scores, top-k search, metrics, re-ranking.

Nothing here materialises the full ``[Nq, Ng]`` score matrix: scores stream over query blocks
and gallery chunks on the device the features live on. Ties are ordered by lower gallery
index (a stable descending sort), everywhere.
"""

from __future__ import annotations

from textreid.retrieval.metrics import RetrievalMetrics, evaluate
from textreid.retrieval.scores import ScoreChunk, cosine_scores
from textreid.retrieval.search import SearchResult, topk_search

__all__ = [
    "RetrievalMetrics",
    "ScoreChunk",
    "SearchResult",
    "cosine_scores",
    "evaluate",
    "topk_search",
]
