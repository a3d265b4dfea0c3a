"""The CLIP text tower: a causal transformer pooled at the end-of-text token (or over the
tokens up to it)."""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import Tensor, nn

from textreid._checks import check_label_range, check_tensor
from textreid.config import TextConfig
from textreid.models.transformer import Transformer
from textreid.text.masking import caption_key_mask

__all__ = ["TextTransformer"]


class _TextTower:
    """Text-tower parameters and encoding shared by :class:`TextTransformer` and the dual
    encoder, which keeps them at its top level so its state dict has the OpenAI key names.

    Mixed into an :class:`torch.nn.Module`; call :meth:`_build_text_tower` after
    ``nn.Module.__init__``.
    """

    text_config: TextConfig
    token_embedding: nn.Embedding
    positional_embedding: nn.Parameter
    transformer: Transformer
    ln_final: nn.LayerNorm
    text_projection: nn.Parameter

    def _build_text_tower(self, config: TextConfig, embed_dim: int) -> None:
        self.text_config = config
        w = config.width
        self.token_embedding = nn.Embedding(config.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, w))
        self.transformer = Transformer(w, config.layers, config.heads, config.mlp_ratio, config.act)
        self.ln_final = nn.LayerNorm(w)
        self.text_projection = nn.Parameter(torch.empty(w, embed_dim))
        self._init_text_tower()

    def _init_text_tower(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_clip_()
        nn.init.normal_(self.text_projection, std=self.text_config.width**-0.5)

    def _encode_text(
        self, ids: Tensor, return_tokens: bool, fn: str
    ) -> Tensor | tuple[Tensor, Tensor]:
        cfg = self.text_config
        check_tensor(ids, "ids", fn, ndim=2, kind="int", dims="(B, L)")
        n = ids.shape[1]
        if n == 0 or n > cfg.context_length:
            raise ValueError(
                f"{fn}: ids has {n} tokens per row but the context length is "
                f"{cfg.context_length}; tokenize with context_length={cfg.context_length}"
            )
        check_label_range(ids, "ids", fn, cfg.vocab_size)
        x = self.token_embedding(ids) + self.positional_embedding[:n]
        x = self.ln_final(self.transformer(x, causal=True))
        tokens: Tensor = x @ self.text_projection
        pooled: Tensor
        if cfg.pool == "eot":
            pooled = tokens[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)]
        else:
            real = caption_key_mask(ids, fn).unsqueeze(-1)
            if cfg.pool == "mean":
                pooled = tokens.masked_fill(~real, 0).sum(1) / real.sum(1)
            else:
                pooled = tokens.masked_fill(~real, float("-inf")).amax(1)
        if return_tokens:
            return pooled, tokens
        return pooled


class TextTransformer(_TextTower, nn.Module):
    """CLIP text encoder (OpenAI parameter names).

    ``token_embedding`` + ``positional_embedding`` → causal transformer → ``ln_final`` →
    ``text_projection`` at every position. The pooled feature is the projected token at
    ``argmax(ids)`` per row: the end-of-text token, because it has the largest id of the CLIP
    vocabulary (the first occurrence if it repeats); with ``config.pool="mean"`` (``"max"``)
    it is the mean (the per-channel maximum) of the projected tokens at positions
    ``<= argmax(ids)``.

    Args:
        config: The tower's hyper-parameters.
        embed_dim: D, the output width of ``text_projection``.

    Shapes:
        ids ``[B, L]`` integer with ``L <= context_length`` (position embeddings
        ``[:L]`` are used, so shorter rows give the same result as zero-padded rows thanks to
        the causal mask); pooled ``[B, D]``; tokens ``[B, L, D]``.
    """

    def __init__(self, config: TextConfig, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self._build_text_tower(config, embed_dim)

    @property
    def config(self) -> TextConfig:
        """The tower's hyper-parameters."""
        return self.text_config

    @overload
    def forward(self, ids: Tensor, return_tokens: Literal[False] = False) -> Tensor: ...

    @overload
    def forward(self, ids: Tensor, return_tokens: Literal[True]) -> tuple[Tensor, Tensor]: ...

    def forward(self, ids: Tensor, return_tokens: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Encode token ids.

        Args:
            ids: ``[B, L]`` integer token ids, ``L <= context_length``.
            return_tokens: Also return every position after ``ln_final`` and projection.

        Returns:
            ``pooled [B, D]`` or ``(pooled, tokens [B, L, D])``.

        Raises:
            TypeError: If ``ids`` is not an integer tensor.
            ValueError: If ``ids`` is not 2-D, longer than the context length, or holds ids
                outside ``[0, vocab_size)``.
        """
        return self._encode_text(ids, return_tokens, "TextTransformer.forward")
