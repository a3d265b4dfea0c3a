"""Caption helpers shared by the methods (CLIP BPE conventions)."""

from __future__ import annotations

from textreid.text import caption_key_mask

__all__ = ["caption_key_mask"]
