"""Pre-LayerNorm transformer blocks shared by every encoder in textreid.

Parameter names follow the OpenAI CLIP layout (``attn.in_proj_weight``, ``mlp.c_fc``,
``ln_1``...) so converting OpenAI / open_clip / IRRA checkpoints is a key rename, never a
reshuffle. Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`
(fused kernels on GPU).

Masks, everywhere in textreid: ``key_mask`` is a bool tensor ``[B, N_k]`` with ``True`` for a
real token and ``False`` for padding (padding keys are never attended to); ``causal=True``
adds the text encoder's causal mask.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MLP",
    "Activation",
    "Attention",
    "QuickGELU",
    "ResidualAttentionBlock",
    "Transformer",
    "make_activation",
]

Activation = Literal["quick_gelu", "gelu"]


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(act: str) -> nn.Module:
    """``"quick_gelu"`` (OpenAI CLIP, IRRA) or ``"gelu"`` (exact erf GELU)."""
    if act == "quick_gelu":
        return QuickGELU()
    if act == "gelu":
        return nn.GELU()
    raise ValueError(f"make_activation: act must be 'quick_gelu' or 'gelu', got {act!r}")


class MLP(nn.Module):
    """``c_proj(act(c_fc(x)))`` with hidden width ``hidden``."""

    def __init__(self, width: int, hidden: int, act: str = "quick_gelu") -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.act = make_activation(act)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c_proj(self.act(self.c_fc(x)))
        return out


def _attention_mask(
    key_mask: Tensor | None, n_q: int, n_k: int, causal: bool, device: torch.device
) -> Tensor | None:
    """Boolean SDPA mask (``True`` = may attend) of shape ``[B | 1, 1, n_q, n_k]`` or None."""
    mask: Tensor | None = None
    if causal:
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()[None, None]
    if key_mask is not None:
        km = key_mask[:, None, None, :]
        mask = km if mask is None else (mask & km)
    return mask


class Attention(nn.Module):
    """Multi-head attention with a fused ``in_proj`` (q, k, v stacked in that order).

    Self-attention when ``context`` is None, else cross-attention from ``x`` (queries) to
    ``context`` (keys and values).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"Attention: width {width} is not divisible by heads {heads}")
        self.width = width
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        key_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        b, n_q, w = x.shape
        h = self.heads
        if context is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            wq, wkv = torch.split(self.in_proj_weight, [w, 2 * w])
            bq, bkv = torch.split(self.in_proj_bias, [w, 2 * w])
            q = F.linear(x, wq, bq)
            k, v = F.linear(context, wkv, bkv).chunk(2, dim=-1)
        n_k = k.shape[1]
        q = q.reshape(b, n_q, h, w // h).transpose(1, 2)
        k = k.reshape(b, n_k, h, w // h).transpose(1, 2)
        v = v.reshape(b, n_k, h, w // h).transpose(1, 2)
        mask = _attention_mask(key_mask, n_q, n_k, causal, x.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(b, n_q, w)
        res: Tensor = self.out_proj(out)
        return res


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln_1 x)``, then ``x + mlp(ln_2 x)``."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float = 4.0, act: str = "quick_gelu"
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, round(width * mlp_ratio), act)

    def forward(self, x: Tensor, *, key_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        x = x + self.attn(self.ln_1(x), key_mask=key_mask, causal=causal)
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """A stack of :class:`ResidualAttentionBlock` (``resblocks.{i}`` in checkpoints)."""

    def __init__(
        self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, act: str = "quick_gelu"
    ) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act) for _ in range(layers)]
        )

    def forward(self, x: Tensor, *, key_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        for block in self.resblocks:
            x = block(x, key_mask=key_mask, causal=causal)
        return x

    def init_clip_(self) -> None:
        """OpenAI CLIP's initialisation (std ``w^-1/2`` for attention, scaled by depth)."""
        w = self.width
        proj_std = (w**-0.5) * ((2 * self.layers) ** -0.5)
        attn_std = w**-0.5
        fc_std = (2 * w) ** -0.5
        for blk in self.resblocks:
            assert isinstance(blk, ResidualAttentionBlock)
            nn.init.normal_(blk.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(blk.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(blk.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(blk.mlp.c_proj.weight, std=proj_std)
