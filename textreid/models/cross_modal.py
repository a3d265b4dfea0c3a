"""IRRA's cross-modal encoder (text queries over image tokens) and its MLM head.

Jiang and Ye, "Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image Person
Retrieval", CVPR 2023, arXiv 2303.12501. Parameter names follow IRRA's checkpoints
(``cross_attn``, ``ln_pre_t``, ``ln_pre_i``, ``cross_modal_transformer.resblocks.{i}``,
``ln_post``, ``mlm_head.{dense,ln,fc}``) so importing is a prefix rename.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from textreid._checks import (
    check_features,
    check_int,
    check_same_device,
    check_same_width,
    check_token_mask,
)
from textreid.models.transformer import Attention, QuickGELU, Transformer

__all__ = ["CrossModalTransformer", "MLMHead"]


class CrossModalTransformer(nn.Module):
    """Text tokens attend to image tokens, then a transformer refines them (IRRA's IRR).

    ``x = cross_attn(ln_pre_t(text), ln_pre_i(image))`` (no residual), then
    ``ln_post(Transformer(x))``.

    Args:
        width: token width D (IRRA: 512).
        depth: transformer layers after the cross-attention (IRRA: 4).
        heads: attention heads (IRRA: 8).
        act: ``"quick_gelu"`` (IRRA) or ``"gelu"``.

    Shapes:
        text_tokens ``[B, L, D]``, image_tokens ``[B, P, D]``, optional bool masks
        ``text_mask [B, L]``, ``image_mask [B, P]`` (True = real) -> ``[B, L, D]``.

    IRRA uses no key masks (padding text positions and every image token attend); that is the
    behaviour when the masks are None. With ``image_mask``, padded image tokens are never
    attended to; with ``text_mask``, padded text positions are never attended to inside the
    transformer (their own outputs are still computed and should be ignored).
    """

    def __init__(
        self, width: int = 512, depth: int = 4, heads: int = 8, act: str = "quick_gelu"
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        check_int(width, "width", fn, min_value=1)
        check_int(depth, "depth", fn, min_value=0)
        check_int(heads, "heads", fn, min_value=1)
        self.width = width
        self.cross_attn = Attention(width, heads)
        self.ln_pre_t = nn.LayerNorm(width)
        self.ln_pre_i = nn.LayerNorm(width)
        self.cross_modal_transformer = Transformer(width, depth, heads, act=act)
        self.ln_post = nn.LayerNorm(width)
        self.init_irra_()

    def init_irra_(self) -> None:
        """IRRA's initialisation of the new modules (CLIP scheme at this width and depth)."""
        self.cross_modal_transformer.init_clip_()
        w, depth = self.width, max(self.cross_modal_transformer.layers, 1)
        nn.init.normal_(self.cross_attn.in_proj_weight, std=w**-0.5)
        nn.init.normal_(self.cross_attn.out_proj.weight, std=(w**-0.5) * ((2 * depth) ** -0.5))
        nn.init.zeros_(self.cross_attn.in_proj_bias)
        nn.init.zeros_(self.cross_attn.out_proj.bias)

    def forward(
        self,
        text_tokens: Tensor,
        image_tokens: Tensor,
        text_mask: Tensor | None = None,
        image_mask: Tensor | None = None,
    ) -> Tensor:
        fn = type(self).__name__
        t = check_features(text_tokens, "text_tokens", fn, ndim=3, dims="(B, L, D)", finite=False)
        i = check_features(image_tokens, "image_tokens", fn, ndim=3, dims="(B, P, D)", finite=False)
        check_same_width(fn, t, "text_tokens", i, "image_tokens")
        check_same_device(fn, text_tokens=t, image_tokens=i)
        if t.shape[-1] != self.width:
            raise ValueError(
                f"{fn}: tokens have width {t.shape[-1]} but the module has width {self.width}"
            )
        if t.shape[0] != i.shape[0]:
            raise ValueError(
                f"{fn}: text_tokens has {t.shape[0]} samples but image_tokens has {i.shape[0]}"
            )
        if text_mask is not None:
            text_mask = check_token_mask(text_mask, "text_mask", fn, t, "text_tokens")
        if image_mask is not None:
            image_mask = check_token_mask(image_mask, "image_mask", fn, i, "image_tokens")
            # Zeroed padding keeps non-finite garbage out of the attention product.
            i = torch.where(
                image_mask[..., None], i, torch.zeros((), dtype=i.dtype, device=i.device)
            )
        x = self.cross_attn(self.ln_pre_t(t), self.ln_pre_i(i), key_mask=image_mask)
        x = self.cross_modal_transformer(x, key_mask=text_mask)
        out: Tensor = self.ln_post(x)
        return out


class MLMHead(nn.Module):
    """``fc(ln(QuickGELU(dense(x))))``: token features to vocabulary logits (IRRA's head).

    Args:
        width: token width D (IRRA: 512).
        vocab_size: output vocabulary V (IRRA: 49408).
        depth: depth of the encoder it follows; only scales ``fc``'s init as IRRA does.

    Shapes:
        ``[B, L, D]`` -> ``[B, L, V]``.
    """

    def __init__(self, width: int = 512, vocab_size: int = 49408, depth: int = 4) -> None:
        super().__init__()
        fn = type(self).__name__
        check_int(width, "width", fn, min_value=1)
        check_int(vocab_size, "vocab_size", fn, min_value=2)
        check_int(depth, "depth", fn, min_value=1)
        self.width = width
        self.vocab_size = vocab_size
        self.dense = nn.Linear(width, width)
        self.gelu = QuickGELU()
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, vocab_size)
        nn.init.normal_(self.dense.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(self.fc.weight, std=(width**-0.5) * ((2 * depth) ** -0.5))

    def forward(self, x: Tensor) -> Tensor:
        fn = type(self).__name__
        check_features(x, "x", fn, ndim=3, dims="(B, L, D)", finite=False)
        if x.shape[-1] != self.width:
            raise ValueError(f"{fn}: x has width {x.shape[-1]} but the head has width {self.width}")
        out: Tensor = self.fc(self.ln(self.gelu(self.dense(x))))
        return out
