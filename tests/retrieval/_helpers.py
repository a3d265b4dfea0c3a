"""Slow references shared by the retrieval tests."""

from __future__ import annotations

import torch
from torch import Tensor

from textreid.retrieval import SearchResult


def stable_topk(scores: Tensor, k: int) -> SearchResult:
    """Top-``k`` of each row by a full stable descending sort (ties: lower index first)."""
    out = torch.sort(scores, dim=1, descending=True, stable=True)
    return SearchResult(out.values[:, :k], out.indices[:, :k])
