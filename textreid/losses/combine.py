"""Combine named losses with weights: :class:`WeightedSum` and its :class:`LossOutput`."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["LossOutput"]


class LossOutput(NamedTuple):
    """A training objective's result.

    Attributes:
        total: the scalar to call ``backward()`` on (weighted sum of the terms).
        terms: per-term values, *weighted* and detached, for logging (``{"sdm": ..., "id": ...}``).
    """

    total: Tensor
    terms: dict[str, Tensor]
