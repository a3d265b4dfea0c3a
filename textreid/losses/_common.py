"""Pieces every matching loss shares: the identity-match matrix and the two-direction result."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["DirectionalLosses", "pid_match"]


class DirectionalLosses(NamedTuple):
    """Per-sample values of a bidirectional loss (``reduction="none"``).

    Attributes:
        image_to_text: ``[B_i]``, one value per image row (image anchors, texts ranked).
        text_to_image: ``[B_t]``, one value per caption row (text anchors, images ranked).
    """

    image_to_text: Tensor
    text_to_image: Tensor


def pid_match(image_pids: Tensor, text_pids: Tensor) -> Tensor:
    """Bool ``[B_i, B_t]`` with ``True`` where image ``i`` and caption ``j`` share an identity."""
    return image_pids[:, None] == text_pids[None, :]
