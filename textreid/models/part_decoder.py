"""A decoder of learnable part queries shared by both modalities (coarse and fine parts).

Provisional design after Park, Jeong, Kim and Kwak, "Improving Text-based Person Search via
Part-level Cross-modal Correspondence", arXiv 2501.00318, 2024 (experimental: the paper's
query counts and depth could not be read; the structure follows the authors' public template
code of the same group). Because the queries and every weight except the key/value norms are
shared, the k-th part of an image and the k-th part of a caption come out aligned without
part-level supervision.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from textreid._checks import check_choice, check_features, check_int, check_token_mask
from textreid.models.transformer import Attention, Transformer

__all__ = ["PartEmbeddings", "PartQueryDecoder"]


class PartEmbeddings(NamedTuple):
    """Output of :class:`PartQueryDecoder`.

    Attributes:
        coarse: ``[B, Q_c, D]`` coarse part embeddings (the first ``num_coarse`` queries).
        fine: ``[B, Q_f, D]`` fine (body-part) embeddings (the remaining queries).
    """

    coarse: Tensor
    fine: Tensor


class PartQueryDecoder(nn.Module):
    """Learnable queries cross-attend to one modality's tokens, then a shared transformer.

    ``x = cross_attn(ln_q(queries), ln_kv[modality](tokens))``, then ``ln_post(Transformer(x))``;
    output split into coarse (first ``num_coarse``) and fine (the rest) embeddings.

    Args:
        num_queries: total queries Q = Q_c + Q_f.
        dim: token width D.
        depth: transformer layers over the queries after the cross-attention.
        num_coarse: coarse queries Q_c (``0 <= Q_c <= Q``).
        heads: attention heads.
        act: ``"quick_gelu"`` or ``"gelu"``.

    Shapes:
        tokens ``[B, N, D]``, key_mask bool ``[B, N]`` (True = real) ->
        :class:`PartEmbeddings` ``([B, Q_c, D], [B, Q_f, D])``.

    Raises:
        ValueError: bad sizes, tokens of the wrong width, unknown modality, bad mask.
    """

    def __init__(
        self,
        num_queries: int,
        dim: int,
        depth: int = 2,
        num_coarse: int = 1,
        heads: int = 8,
        act: str = "quick_gelu",
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        check_int(num_queries, "num_queries", fn, min_value=1)
        check_int(dim, "dim", fn, min_value=1)
        check_int(depth, "depth", fn, min_value=0)
        check_int(num_coarse, "num_coarse", fn, min_value=0)
        if num_coarse > num_queries:
            raise ValueError(f"{fn}: num_coarse {num_coarse} exceeds num_queries {num_queries}")
        self.num_queries = num_queries
        self.num_coarse = num_coarse
        self.dim = dim
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * dim**-0.5)
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.ModuleDict({"image": nn.LayerNorm(dim), "text": nn.LayerNorm(dim)})
        self.cross_attn = Attention(dim, heads)
        self.transformer = Transformer(dim, depth, heads, act=act)
        self.ln_post = nn.LayerNorm(dim)
        self.transformer.init_clip_()

    def forward(
        self, tokens: Tensor, modality: str, key_mask: Tensor | None = None
    ) -> PartEmbeddings:
        fn = type(self).__name__
        check_choice(modality, "modality", fn, ("image", "text"))
        x = check_features(tokens, "tokens", fn, ndim=3, dims="(B, N, D)", finite=False)
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{fn}: tokens have width {x.shape[-1]} but the decoder has dim {self.dim}"
            )
        if key_mask is not None:
            key_mask = check_token_mask(key_mask, "key_mask", fn, x, "tokens")
            x = torch.where(key_mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        q = self.ln_q(self.queries).expand(x.shape[0], -1, -1)
        out = self.cross_attn(q, self.ln_kv[modality](x), key_mask=key_mask)
        out = self.ln_post(self.transformer(out))
        return PartEmbeddings(out[:, : self.num_coarse], out[:, self.num_coarse :])
