"""Attribute words of pedestrian captions: a vocabulary, where its words occur, masking them.

UCA (Deng, Chen, Li, Tang, Visual Intelligence 2025, doi:10.1007/s44267-025-00078-x) masks
attribute words of the caption and reconstructs them
(:class:`~textreid.losses.AttributeMaskReconstructionLoss`). Its vocabulary and masking rate
are not public; the choices below are ours and stated where they are made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from textreid._checks import check_tensor

__all__ = [
    "PEDESTRIAN_ATTRIBUTE_WORDS",
    "PEDESTRIAN_COLOR_WORDS",
    "PEDESTRIAN_GARMENT_WORDS",
    "AttributeMasking",
    "attribute_positions",
    "attribute_token_sequences",
    "mask_attribute_tokens",
]

PEDESTRIAN_COLOR_WORDS: tuple[str, ...] = (
    "black", "white", "gray", "grey", "red", "blue", "green", "yellow", "orange", "purple",
    "pink", "brown", "beige", "khaki", "navy", "tan", "maroon", "cream", "silver", "gold",
    "dark", "light", "colorful", "striped", "plaid", "checkered", "floral",
)  # fmt: skip
"""Colour and pattern words frequent in CUHK-PEDES / ICFG-PEDES / RSTPReid captions (ours)."""

PEDESTRIAN_GARMENT_WORDS: tuple[str, ...] = (
    "shirt", "t-shirt", "tshirt", "blouse", "sweater", "hoodie", "jacket", "coat", "vest",
    "top", "dress", "skirt", "pants", "trousers", "jeans", "shorts", "leggings", "suit",
    "shoes", "sneakers", "boots", "sandals", "heels", "socks", "hat", "cap", "scarf",
    "glasses", "sunglasses", "backpack", "bag", "handbag", "purse", "umbrella", "belt",
    "hair", "ponytail", "sleeves", "sleeved", "collar", "hood",
)  # fmt: skip
"""Garment, accessory and hair words of pedestrian captions (ours)."""

PEDESTRIAN_ATTRIBUTE_WORDS: tuple[str, ...] = PEDESTRIAN_COLOR_WORDS + PEDESTRIAN_GARMENT_WORDS
"""Colour and garment words together: the default attribute vocabulary."""


def attribute_token_sequences(
    tokenize: Callable[[str], Sequence[int]],
    words: Iterable[str] = PEDESTRIAN_ATTRIBUTE_WORDS,
) -> list[tuple[int, ...]]:
    """Token-id sequences of attribute words, for :func:`attribute_positions`.

    Args:
        tokenize: maps a word to its token ids *without* start/end tokens (e.g. a BPE
            tokenizer's ``encode``). Word-level tokenizers such as CLIP's BPE tokenise a word
            alone exactly as inside a caption, which is what the span matching relies on.
        words: the vocabulary (default :data:`PEDESTRIAN_ATTRIBUTE_WORDS`).

    Returns:
        Distinct non-empty sequences, longest first (so longer words win overlapping matches).

    Raises:
        TypeError: ``tokenize`` returns something other than a sequence of ints.
    """
    seqs: set[tuple[int, ...]] = set()
    for word in words:
        ids = tokenize(word)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise TypeError(
                f"attribute_token_sequences: tokenize({word!r}) must return ints, got {ids!r}"
            )
        if len(ids) > 0:
            seqs.add(tuple(ids))
    return sorted(seqs, key=lambda s: (-len(s), s))


def _check_ids(fn: str, token_ids: object) -> Tensor:
    return check_tensor(token_ids, "token_ids", fn, ndim=2, kind="int", dims="(B, L)")


def attribute_positions(token_ids: Tensor, sequences: Sequence[Sequence[int]]) -> Tensor:
    """Bool ``[B, L]`` marking every token that belongs to an occurrence of an attribute word.

    A sequence matches wherever its ids appear contiguously in a row; a multi-token word can
    therefore also match the tail of a longer word that ends with the same pieces.

    Args:
        token_ids: ``[B, L]`` integer token ids (padding ids never match unless listed).
        sequences: token-id sequences from :func:`attribute_token_sequences`.

    Raises:
        TypeError, ValueError: ``token_ids`` is not a 2-D integer tensor, or a sequence is
            empty.
    """
    fn = "attribute_positions"
    return _word_starts(fn, _check_ids(fn, token_ids), sequences) >= 0


def _word_starts(fn: str, ids: Tensor, sequences: Sequence[Sequence[int]]) -> Tensor:
    """``[B, L]`` long: for each token of an attribute word, the position where that word
    starts; -1 elsewhere. Sequences are taken in the given order (longest first from
    :func:`attribute_token_sequences`) and a token keeps the first word that claims it, so
    a word's tail matching a shorter word does not split it."""
    owner = torch.full_like(ids, -1, dtype=torch.long)
    length = ids.shape[1]
    positions = torch.arange(length, device=ids.device)
    for seq in sequences:
        n = len(seq)
        if n == 0:
            raise ValueError(f"{fn}: sequences must not contain an empty sequence")
        if n > length:
            continue
        windows = ids.unfold(1, n, 1)  # [B, L - n + 1, n]
        # Compared id by id with Python ints: a pattern tensor per word would be a blocking
        # copy to the device (a sync on accelerators) for every word of the vocabulary.
        starts = windows[..., 0] == int(seq[0])
        for k in range(1, n):
            starts &= windows[..., k] == int(seq[k])
        width = starts.shape[1]
        for offset in range(n):
            span = owner[:, offset : offset + width]
            span.copy_(torch.where(starts & (span < 0), positions[:width], span))
    return owner


class AttributeMasking(NamedTuple):
    """Result of :func:`mask_attribute_tokens`.

    Attributes:
        input_ids: ``[B, L]`` ids with the chosen attribute tokens replaced by the mask id.
        labels: ``[B, L]`` original ids at masked positions, ``ignore_index`` elsewhere.
        mask: bool ``[B, L]``, True where a token was masked.
    """

    input_ids: Tensor
    labels: Tensor
    mask: Tensor


def mask_attribute_tokens(
    token_ids: Tensor,
    sequences: Sequence[Sequence[int]],
    mask_token_id: int,
    *,
    mask_prob: float = 1.0,
    ignore_index: int = -100,
    generator: torch.Generator | None = None,
) -> AttributeMasking:
    """Mask attribute words of captions for reconstruction (whole words, never pieces).

    Every occurrence of an attribute word is masked with probability ``mask_prob``, all of
    its tokens together; adjacent attribute words ("dark blue") are drawn independently. The
    default 1 masks every occurrence; :class:`~textreid.methods.UCAMethod` masks a random
    subset (see its ``mask_prob``). The draw is one uniform number per token position, read
    at the word's first token, so the shapes never depend on the values: no host sync, and
    the result is a function of the RNG state (``generator``, or the global RNG).

    Args:
        token_ids: ``[B, L]`` caption token ids.
        sequences: attribute token sequences (:func:`attribute_token_sequences`).
        mask_token_id: the id written at masked positions.
        mask_prob: probability in ``(0, 1]`` of masking each word occurrence.
        ignore_index: label of unmasked positions (``-100``, PyTorch's cross-entropy default).
        generator: RNG for ``mask_prob < 1`` (on the ids' device); the global RNG when None.

    Returns:
        :class:`AttributeMasking` ``(input_ids, labels, mask)``.

    Raises:
        TypeError, ValueError: bad ``token_ids``, ``mask_prob`` outside ``(0, 1]``.
    """
    fn = "mask_attribute_tokens"
    ids = _check_ids(fn, token_ids)
    if isinstance(mask_prob, bool) or not isinstance(mask_prob, (int, float)):
        raise TypeError(f"{fn}: mask_prob must be a float in (0, 1], got {mask_prob!r}")
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"{fn}: mask_prob must be in (0, 1], got {mask_prob}")
    starts = _word_starts(fn, ids, sequences)
    mask = starts >= 0
    if mask_prob < 1.0:
        draw = torch.rand(ids.shape, generator=generator, device=ids.device) < mask_prob
        mask &= draw.gather(1, starts.clamp(min=0))
    input_ids = ids.masked_fill(mask, mask_token_id)
    labels = ids.masked_fill(~mask, ignore_index)
    return AttributeMasking(input_ids, labels, mask)
