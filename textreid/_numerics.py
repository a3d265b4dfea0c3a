"""Numeric conventions shared by losses, heads and retrieval."""

from __future__ import annotations

import torch
from torch import Tensor

__all__: list[str] = []


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype reductions run in: float32 for half/bfloat16/float32 (and integer) inputs,
    float64 when any input is float64. Half precision loses too much in softmax, log-sum-exp,
    min/max ranges and long dot products, so it is always accumulated in float32."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype
