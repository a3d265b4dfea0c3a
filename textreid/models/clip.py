"""The CLIP dual encoder: a vision tower and a text tower projected to one space."""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import Tensor, nn

from textreid._numerics import l2_normalize
from textreid.config import CLIPConfig
from textreid.models.text import _TextTower
from textreid.models.vit import VisionTransformer

__all__ = ["CLIPDualEncoder"]


class CLIPDualEncoder(_TextTower, nn.Module):
    """CLIP image and text encoders with OpenAI / open_clip state-dict names.

    The vision tower lives in ``.visual``; the text tower's parameters sit at the top level
    (``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
    ``text_projection``) next to ``logit_scale``, so ``state_dict()`` keys equal the
    OpenAI/open_clip layout exactly and their checkpoints load without renaming.
    Initialisation follows OpenAI CLIP.

    Args:
        config: Both towers and the embedding width D.

    Example:
        >>> from textreid.models import create_model
        >>> model = create_model("tiny")
        >>> model.encode_image(torch.zeros(2, 3, 64, 32)).shape
        torch.Size([2, 64])
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.visual = VisionTransformer(config.vision, config.embed_dim)
        self._build_text_tower(config.text, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))

    @overload
    def encode_image(self, images: Tensor, return_tokens: Literal[False] = False) -> Tensor: ...

    @overload
    def encode_image(
        self, images: Tensor, return_tokens: Literal[True]
    ) -> tuple[Tensor, Tensor]: ...

    def encode_image(
        self, images: Tensor, return_tokens: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Unnormalised image features ``[B, D]`` (and tokens ``[B, P, D]``).

        See :meth:`VisionTransformer.forward`.
        """
        out: Tensor | tuple[Tensor, Tensor] = self.visual(images, return_tokens)
        return out

    @overload
    def encode_text(self, ids: Tensor, return_tokens: Literal[False] = False) -> Tensor: ...

    @overload
    def encode_text(self, ids: Tensor, return_tokens: Literal[True]) -> tuple[Tensor, Tensor]: ...

    def encode_text(
        self, ids: Tensor, return_tokens: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Unnormalised text features ``[B, D]`` pooled at ``argmax(ids)`` or over the tokens
        up to it (``config.text.pool``), and tokens ``[B, L, D]``.

        See :meth:`TextTransformer.forward`.
        """
        return self._encode_text(ids, return_tokens, "CLIPDualEncoder.encode_text")

    def forward(self, images: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised ``(image_feats [B_i, D], text_feats [B_t, D])``.

        Multiply ``image_feats @ text_feats.T`` by ``logit_scale.exp()`` for CLIP logits.
        """
        image_feats = self.encode_image(images)
        text_feats = self.encode_text(ids)
        return (
            l2_normalize(image_feats).to(image_feats.dtype),
            l2_normalize(text_feats).to(text_feats.dtype),
        )
