"""Caption masks: the real tokens of a caption, and masking for masked language modelling
(IRRA's rule, BERT's 80/10/10)."""

from __future__ import annotations

import torch
from torch import Tensor

from textreid._checks import check_int, check_label_range, check_positive, check_tensor

__all__ = ["caption_key_mask", "mask_for_mlm"]


def caption_key_mask(text_ids: Tensor, fn: str) -> Tensor:
    """Bool ``[B, L]``: True from the start token up to the end token of each caption.

    CLIP's end-of-text token has the largest id of the vocabulary and padding follows it, so
    the real tokens of row ``b`` are the positions ``<= argmax(text_ids[b])`` (the same rule as
    CLIP's text pooling).

    Args:
        text_ids: int ``[B, L]`` token ids.
        fn: the public function called, named in errors.

    Raises:
        TypeError: ``text_ids`` is not an int tensor.
        ValueError: ``text_ids`` is not 2-D.
    """
    ids = check_tensor(text_ids, "text_ids", fn, ndim=2, kind="int", dims="(B, L)")
    positions = torch.arange(ids.shape[1], device=ids.device)
    return positions[None, :] <= ids.argmax(dim=-1, keepdim=True)


def mask_for_mlm(
    ids: Tensor,
    mask_token_id: int,
    vocab_size: int,
    *,
    generator: torch.Generator | None = None,
    probability: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """Mask caption tokens for MLM the way IRRA's dataset does (BERT's 80/10/10 rule).

    Eligible positions hold ``0 < id < mask_token_id`` (never padding, start, end or mask).
    Each is selected with ``probability``; a selected token becomes ``mask_token_id`` (80 %),
    a uniform random id in ``[1, mask_token_id)`` (10 %) or stays (10 %); its label is the
    original id, every other label is 0. A row with nothing selected gets position 1 forced to
    the mask token (label = its original id), as IRRA does.

    Args:
        ids: int ``[L]`` or ``[B, L]`` token ids (``L >= 2``). Never modified in place (IRRA's
            dataset writes into the caption it also uses for the global loss; see the IRRA
            recipe's ``global_text_from_masked_caption`` to reproduce that).
        mask_token_id: id of the mask token, in ``[2, vocab_size)`` (IRRA: 49405); the ids
            below it are the ordinary tokens, those above it special ones.
        vocab_size: vocabulary size; every id must be below it (IRRA: 49408).
        generator: torch random generator for reproducible masks, on the device of ``ids``.
        probability: selection probability (IRRA: 0.15).

    Returns:
        ``(masked_ids, labels)``, both shaped like ``ids``; ``labels`` 0 = not predicted.

    Raises:
        ValueError: ids out of ``[0, vocab_size)``, ``mask_token_id`` outside
            ``[2, vocab_size)``, rows shorter than 2, probability outside ``(0, 1]``, a
            generator on another device than ``ids``.
        TypeError: non-integer ids, a non-int ``mask_token_id`` or ``vocab_size``, a non-number
            probability, a generator that is not a ``torch.Generator``.

    Differences from the reference code: IRRA draws with Python's ``random`` per token in a
    DataLoader worker; this draws with torch (same distribution, not the same sequence).
    """
    fn = "mask_for_mlm"
    x = check_tensor(ids, "ids", fn, ndim=(1, 2), kind="int", dims="(L,) or (B, L)")
    check_int(vocab_size, "vocab_size", fn, min_value=3)
    check_int(mask_token_id, "mask_token_id", fn)
    if mask_token_id < 2:
        # Ordinary tokens are 0 < id < mask_token_id and random replacements are drawn from
        # [1, mask_token_id): below 2 nothing could be masked or drawn, and 0 is padding.
        raise ValueError(
            f"{fn}: mask_token_id must be at least 2, got {mask_token_id}: the tokens that get "
            "masked are the ids 0 < id < mask_token_id (0 is padding, ids above the mask token "
            "are special such as start/end of text), so the mask token must sit above them "
            "(IRRA/CLIP: 49405)"
        )
    if mask_token_id >= vocab_size:
        raise ValueError(
            f"{fn}: mask_token_id {mask_token_id} must be below vocab_size {vocab_size}"
        )
    check_positive(probability, "probability", fn)
    if probability > 1:
        raise ValueError(f"{fn}: probability must be in (0, 1], got {probability}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"{fn}: generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if generator.device.type != x.device.type:
            raise ValueError(f"{fn}: ids is on {x.device} but generator is on {generator.device}")
    if x.shape[-1] < 2:
        raise ValueError(f"{fn}: ids needs at least 2 positions per row, got {x.shape[-1]}")
    check_label_range(x, "ids", fn, vocab_size)
    rows = x.reshape(-1, x.shape[-1])
    u = torch.rand(rows.shape, generator=generator, device=rows.device)
    random_ids = torch.randint(
        1, mask_token_id, rows.shape, generator=generator, device=rows.device
    )
    selected = (rows > 0) & (rows < mask_token_id) & (u < probability)
    v = u / probability
    masked = torch.where(selected & (v < 0.8), torch.full_like(rows, mask_token_id), rows)
    masked = torch.where(selected & (v >= 0.8) & (v < 0.9), random_ids.to(rows.dtype), masked)
    labels = torch.where(selected, rows, torch.zeros_like(rows))
    # Fixed-shape writes: a boolean-mask assignment would cost a device sync on accelerators.
    second = torch.arange(rows.shape[1], device=rows.device) == 1
    forced = ~selected.any(dim=1, keepdim=True) & second
    labels = torch.where(forced, rows, labels)
    masked = torch.where(forced, torch.full_like(rows, mask_token_id), masked)
    return masked.reshape(x.shape), labels.reshape(x.shape)
