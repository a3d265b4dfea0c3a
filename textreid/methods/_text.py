"""Caption helpers shared by the methods (CLIP BPE conventions)."""

from __future__ import annotations

import torch
from torch import Tensor

from textreid._checks import check_tensor


def caption_key_mask(text_ids: Tensor, fn: str) -> Tensor:
    """Bool ``[B, L]``: True from the start token up to the end token of each caption.

    CLIP's end-of-text token has the largest id of the vocabulary and padding follows it, so
    the real tokens of row ``b`` are the positions ``<= argmax(text_ids[b])`` (the same rule as
    CLIP's text pooling).
    """
    ids = check_tensor(text_ids, "text_ids", fn, ndim=2, kind="int", dims="(B, L)")
    positions = torch.arange(ids.shape[1], device=ids.device)
    return positions[None, :] <= ids.argmax(dim=-1, keepdim=True)
