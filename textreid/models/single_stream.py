"""IVT's single-stream encoder: one transformer for images and captions, modality-specific FFNs.

Shu et al., "See Finer, See More: Implicit Modality Alignment for Text-based Person
Retrieval", ECCV 2022 Workshops, arXiv 2208.08608.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor, nn

from textreid._checks import (
    check_choice,
    check_features,
    check_int,
    check_label_range,
    check_positive,
    check_tensor,
    check_token_mask,
)
from textreid.models.transformer import MLP, Attention

__all__ = ["ModalityExpertBlock", "SingleStreamEncoder", "TokenDropper", "token_drop_indices"]


# Host-side draws from a Python or torch RNG: torch.compile runs them eagerly (one graph break)
# instead of tracing into random.Random, which it cannot.
@torch.compiler.disable  # type: ignore[untyped-decorator]
def token_drop_indices(n: int, ratio: float, rng: random.Random | torch.Generator) -> list[int]:
    """Indices kept by IVT's bidirectional mask modelling (BMM) for ``n`` tokens (CLS at 0).

    ``n_drop = randint(0, int(ratio * n))`` (inclusive) of the non-CLS tokens are dropped after
    one random permutation; the CLS token is kept first and the survivors follow in the
    *shuffled* order, as released.

    With a :class:`random.Random`, the draws are exactly the released code's
    (``shuffle`` of ``[1, n)`` then ``randint``), so a ``random.Random(seed)`` reproduces its
    index sequence for the same Python random state. With a :class:`torch.Generator` the same
    distribution is drawn by ``randperm`` / ``randint`` (different sequence).
    """
    budget = int(ratio * n)
    if isinstance(rng, random.Random):
        order = list(range(1, n))
        rng.shuffle(order)
        start = rng.randint(0, budget)
        return [0, *order[start:]]
    perm = (torch.randperm(n - 1, generator=rng) + 1).tolist()
    start = int(torch.randint(0, budget + 1, (1,), generator=rng))
    return [0, *perm[start:]]


class TokenDropper(nn.Module):
    """IVT's BMM as released: drop a random share of tokens, one permutation per batch.

    Active only in training mode (identity in eval). Every sample of the batch loses the same
    positions (text padding may be among them); the CLS token (index 0) is always kept and the
    kept tokens come out in shuffled order (which does not change the CLS output of an
    unmasked attention, but does change per-token outputs).

    Args:
        ratio: maximum dropped share; ``n_drop`` is uniform in ``[0, int(ratio * N)]``
            (IVT: 0.2, so about 10 % on average).
        rng: a :class:`random.Random` (reproduces the released code's draws) or a
            :class:`torch.Generator`; None uses torch's global generator.

    Shapes:
        tokens ``[B, N, D]``, mask bool ``[B, N]`` or None -> ``([B, N', D], [B, N'] | None)``.
    """

    def __init__(
        self, ratio: float = 0.2, rng: random.Random | torch.Generator | None = None
    ) -> None:
        super().__init__()
        check_positive(ratio, "ratio", type(self).__name__, allow_zero=True)
        if ratio >= 1:
            raise ValueError(f"{type(self).__name__}: ratio must be below 1, got {ratio}")
        self.ratio = ratio
        self.rng = rng

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        fn = type(self).__name__
        x = check_features(tokens, "tokens", fn, ndim=3, dims="(B, N, D)", finite=False)
        if mask is not None:
            check_token_mask(mask, "mask", fn, x, "tokens")
        if not self.training:
            return x, mask
        rng = self.rng if self.rng is not None else torch.default_generator
        # The draws happen on the host; a non-blocking copy lets an accelerator's queue run on
        # (a blocking one waits for it to drain).
        keep = torch.tensor(token_drop_indices(x.shape[1], self.ratio, rng))
        keep = keep.to(x.device, non_blocking=True)
        return x[:, keep], None if mask is None else mask[:, keep]


class ModalityExpertBlock(nn.Module):
    """Pre-LN block with shared norms and attention and one feed-forward per modality.

    ``x + attn(ln_1 x)``, then ``x + mlp_m(ln_2 x)`` with ``mlp_vis`` or ``mlp_txt``.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp_vis = MLP(width, hidden, "gelu")
        self.mlp_txt = MLP(width, hidden, "gelu")

    def forward(self, x: Tensor, modality: str, key_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), key_mask=key_mask)
        mlp = self.mlp_vis if modality == "image" else self.mlp_txt
        out: Tensor = x + mlp(self.ln_2(x))
        return out


class SingleStreamEncoder(nn.Module):
    """One transformer for both modalities (IVT), CLS pooling, no projection head.

    Images: overlapping patch embedding (``Conv2d(k=patch_size, stride=stride)``), a class
    token, learned position and vision-type embeddings. Captions: BERT-like word + position
    embeddings with LayerNorm (eps 1e-12). Both then run through the same
    :class:`ModalityExpertBlock` stack and a shared final LayerNorm; the embedding is token 0.

    Args:
        image_size: ``(H, W)`` (IVT: ``(384, 128)``).
        patch_size: patch side (IVT: 16).
        stride: patch stride; ``< patch_size`` overlaps (IVT: 12 on CUHK-PEDES / ICFG-PEDES).
        vocab_size: text vocabulary (IVT: BERT's 30522).
        max_text_len: number of text positions (BERT: 512).
        width: token width D (IVT: 768).
        depth: blocks (IVT: 12).
        heads: attention heads (IVT: 12).
        mlp_ratio: feed-forward expansion (IVT: 4).
        drop_ratio: :class:`TokenDropper` ratio used in training (IVT: 0.2; 0 disables).
        rng: random source of the token dropper.

    Shapes:
        ``encode_image``: images ``[B, 3, H, W]`` -> ``[B, D]``;
        ``encode_text``: ids int ``[B, L]``, attention_mask bool ``[B, L]`` -> ``[B, D]``.

    Differences from the reference: no drop-path and no dropout (add them in a recipe if
    needed); the key-padding mask is a boolean mask instead of an additive ``-10000``.
    """

    def __init__(
        self,
        image_size: tuple[int, int] = (384, 128),
        patch_size: int = 16,
        stride: int = 16,
        vocab_size: int = 30522,
        max_text_len: int = 512,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_ratio: float = 0.2,
        rng: random.Random | torch.Generator | None = None,
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        for name, value in (
            ("patch_size", patch_size),
            ("stride", stride),
            ("vocab_size", vocab_size),
            ("max_text_len", max_text_len),
            ("width", width),
            ("heads", heads),
        ):
            check_int(value, name, fn, min_value=1)
        check_int(depth, "depth", fn, min_value=0)
        h, w = image_size
        if h < patch_size or w < patch_size:
            raise ValueError(
                f"{fn}: image_size {image_size} is smaller than patch_size {patch_size}"
            )
        self.grid = ((h - patch_size) // stride + 1, (w - patch_size) // stride + 1)
        self.image_size = (h, w)
        self.width = width
        self.vocab_size = vocab_size
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=stride)
        n_img = self.grid[0] * self.grid[1] + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_img, width))
        self.type_embed = nn.Parameter(torch.zeros(1, n_img, width))
        self.word_embeddings = nn.Embedding(vocab_size, width)
        self.position_embeddings = nn.Embedding(max_text_len, width)
        self.ln_text = nn.LayerNorm(width, eps=1e-12)
        self.blocks = nn.ModuleList(
            [ModalityExpertBlock(width, heads, mlp_ratio) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.dropper = TokenDropper(drop_ratio, rng)
        for p in (self.cls_token, self.pos_embed, self.type_embed):
            nn.init.trunc_normal_(p, std=0.02)
        nn.init.normal_(self.word_embeddings.weight, std=0.02)
        nn.init.normal_(self.position_embeddings.weight, std=0.02)

    def _encode(self, x: Tensor, modality: str, mask: Tensor | None) -> Tensor:
        x, mask = self.dropper(x, mask)
        for blk in self.blocks:
            x = blk(x, modality, mask)
        out: Tensor = self.norm(x)
        return out[:, 0]

    def encode_image(self, images: Tensor) -> Tensor:
        fn = type(self).__name__
        x = check_features(images, "images", fn, ndim=4, dims="(B, 3, H, W)", finite=False)
        if x.shape[1] != 3 or tuple(x.shape[2:]) != self.image_size:
            raise ValueError(
                f"{fn}: images must be (B, 3, {self.image_size[0]}, {self.image_size[1]}), "
                f"got {tuple(x.shape)}"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self._encode(x + self.pos_embed + self.type_embed, "image", None)

    def encode_text(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        fn = type(self).__name__
        t = check_tensor(ids, "ids", fn, ndim=2, kind="int", dims="(B, L)")
        n = self.position_embeddings.num_embeddings
        if t.shape[1] > n:
            raise ValueError(f"{fn}: ids has {t.shape[1]} positions but max_text_len is {n}")
        check_label_range(t, "ids", fn, self.vocab_size)
        if attention_mask is not None:
            check_token_mask(attention_mask, "attention_mask", fn, t[..., None], "ids")
        pos = torch.arange(t.shape[1], device=t.device)
        x = self.ln_text(self.word_embeddings(t) + self.position_embeddings(pos)[None])
        return self._encode(x, "text", attention_mask)

    def forward(
        self, inputs: Tensor, modality: str, attention_mask: Tensor | None = None
    ) -> Tensor:
        """Embed ``inputs`` (images or token ids, per ``modality``) to ``[B, D]``."""
        check_choice(modality, "modality", type(self).__name__, ("image", "text"))
        if modality == "image":
            return self.encode_image(inputs)
        return self.encode_text(inputs, attention_mask)
