r"""Attribute-word masking and its uncertainty-weighted reconstruction loss (UCA-style).

UCA (Deng, Chen, Li, Tang, Visual Intelligence 2025, doi:10.1007/s44267-025-00078-x) masks
attribute words of the caption and reconstructs them from the cross-modal interaction of
sampled points, weighting by uncertainty. Its vocabulary, masking rate and weighting are not
public; the choices below are ours and stated where they are made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import (
    Reduction,
    check_choice,
    check_finite,
    check_int,
    check_label_range,
    check_labels,
    check_reduction,
    check_same_device,
    check_tensor,
)
from textreid._numerics import compute_dtype

__all__ = [
    "PEDESTRIAN_ATTRIBUTE_WORDS",
    "PEDESTRIAN_COLOR_WORDS",
    "PEDESTRIAN_GARMENT_WORDS",
    "AttributeMaskReconstructionLoss",
    "AttributeMasking",
    "attribute_mask_reconstruction_loss",
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
    ids = _check_ids(fn, token_ids)
    out = torch.zeros_like(ids, dtype=torch.bool)
    length = ids.shape[1]
    for seq in sequences:
        n = len(seq)
        if n == 0:
            raise ValueError(f"{fn}: sequences must not contain an empty sequence")
        if n > length:
            continue
        pattern = torch.tensor(list(seq), dtype=ids.dtype, device=ids.device)
        windows = ids.unfold(1, n, 1)  # [B, L - n + 1, n]
        starts = (windows == pattern).all(dim=-1)
        for offset in range(n):
            out[:, offset : offset + starts.shape[1]] |= starts
    return out


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

    Every run of attribute tokens (one word, or adjacent attribute words such as "dark blue")
    is masked with probability ``mask_prob`` (ours: 1, mask them all; UCA's rate is not
    public), all of its tokens together.

    Args:
        token_ids: ``[B, L]`` caption token ids.
        sequences: attribute token sequences (:func:`attribute_token_sequences`).
        mask_token_id: the id written at masked positions.
        mask_prob: probability in ``(0, 1]`` of masking each word occurrence.
        ignore_index: label of unmasked positions (``-100``, PyTorch's cross-entropy default).
        generator: RNG for ``mask_prob < 1``.

    Returns:
        :class:`AttributeMasking` ``(input_ids, labels, mask)``.

    Raises:
        TypeError, ValueError: bad ``token_ids``, ``mask_prob`` outside ``(0, 1]``.
    """
    fn = "mask_attribute_tokens"
    ids = _check_ids(fn, token_ids)
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"{fn}: mask_prob must be in (0, 1], got {mask_prob}")
    mask = attribute_positions(ids, sequences)
    if mask_prob < 1.0:
        # one draw per word occurrence: a run of attribute tokens starts where the mask rises
        starts = mask & ~F.pad(mask[:, :-1], (1, 0), value=False)
        keep_word = torch.rand(ids.shape, generator=generator, device=ids.device) < mask_prob
        word_index = starts.long().cumsum(dim=1)  # occurrence number of each token
        first_pos = torch.where(starts, keep_word, False)
        chosen = torch.zeros_like(mask)
        for b in range(ids.shape[0]):
            picked = word_index[b][first_pos[b]]
            chosen[b] = mask[b] & torch.isin(word_index[b], picked)
        mask = chosen
    input_ids = ids.masked_fill(mask, mask_token_id)
    labels = ids.masked_fill(~mask, ignore_index)
    return AttributeMasking(input_ids, labels, mask)


def _check_amr_args(fn: str, weighting: str, reduction: str) -> None:
    check_choice(weighting, "weighting", fn, ("inverse", "none"))
    check_reduction(reduction, fn)


def _amr(
    fn: str,
    logits: Tensor,
    labels: Tensor,
    uncertainty: Tensor | None,
    ignore_index: int,
    weighting: str,
    detach_uncertainty: bool,
    reduction: str,
    finite: bool,
) -> Tensor:
    _check_amr_args(fn, weighting, reduction)
    check_int(ignore_index, "ignore_index", fn)
    lg = check_tensor(logits, "logits", fn, ndim=3, kind="float", dims="(B, L, V)")
    lb = check_labels(labels, "labels", fn, ndim=2, dims="(B, L)")
    if lb.shape != lg.shape[:2]:
        raise ValueError(
            f"{fn}: labels has shape {tuple(lb.shape)} but logits has {tuple(lg.shape[:2])} (B, L)"
        )
    check_same_device(fn, logits=lg, labels=lb)
    # The range check syncs with the device: eager on the CPU, behind check_finite elsewhere.
    if finite or lb.device.type == "cpu":
        check_label_range(lb, "labels", fn, lg.shape[-1], ignore_index=ignore_index)
    if finite:
        check_finite(lg, "logits", fn)
    dtype = compute_dtype(lg)
    weights: Tensor | None = None
    if weighting == "inverse":
        if uncertainty is None:
            raise ValueError(f"{fn}: weighting='inverse' needs uncertainty [B]")
        u = check_tensor(uncertainty, "uncertainty", fn, ndim=1, kind="float", dims="(B,)")
        if u.shape[0] != lg.shape[0]:
            raise ValueError(
                f"{fn}: uncertainty has {u.shape[0]} entries but logits has {lg.shape[0]} rows"
            )
        check_same_device(fn, logits=lg, uncertainty=u)
        if finite:
            check_finite(u, "uncertainty", fn)
        u = u.detach() if detach_uncertainty else u
        weights = 1.0 / (1.0 + u.to(dtype).clamp_min(0.0))
    valid = lb != ignore_index
    ce = F.cross_entropy(
        lg.to(dtype).transpose(1, 2), lb.masked_fill(~valid, 0), reduction="none"
    ) * valid.to(dtype)
    if weights is not None:
        ce = ce * weights.to(ce.dtype)[:, None]
    if reduction == "none":
        return ce
    if reduction == "sum":
        return ce.sum()
    return ce.sum() / valid.sum().clamp_min(1).to(ce.dtype)


def attribute_mask_reconstruction_loss(
    logits: Tensor,
    labels: Tensor,
    uncertainty: Tensor | None = None,
    *,
    ignore_index: int = -100,
    weighting: str = "inverse",
    detach_uncertainty: bool = True,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor:
    """Functional form of :class:`AttributeMaskReconstructionLoss` (same arguments)."""
    return _amr(
        "attribute_mask_reconstruction_loss", logits, labels, uncertainty, ignore_index,
        weighting, detach_uncertainty, reduction, check_finite,
    )  # fmt: skip


class AttributeMaskReconstructionLoss(nn.Module):
    r"""Uncertainty-weighted reconstruction of masked attribute words (the "uncertainty-aware
    attribute masking language reconstruction" of UCA, Deng et al., Visual Intelligence 2025,
    doi:10.1007/s44267-025-00078-x; the weighting is ours, the paper's is not public).

    The caller masks attribute words (:func:`mask_attribute_tokens`), runs any cross-modal
    module on the masked caption and the image's sampled points, and passes the token logits.
    With per-sample uncertainty :math:`u_b \ge 0` (e.g.
    :meth:`~textreid.heads.GaussianEmbedding.uncertainty` of the image or caption) and the set
    :math:`\mathcal M` of masked (labelled) positions:

    .. math::

        \mathcal L = \frac{1}{|\mathcal M|}\sum_{(b,l)\in\mathcal M}
            w_b\,\mathrm{CE}(\text{logits}_{b,l}, y_{b,l}), \qquad
            w_b = \frac{1}{1 + u_b}

    Our choices and why: :math:`1/(1+u)` down-weights captions or images the model is unsure
    about (one-to-many or ambiguous pairs) and is 1 at zero uncertainty, bounded in (0, 1];
    the uncertainty is detached by default because otherwise the loss can be lowered by
    inflating the variances; the normaliser is the number of masked tokens, as in IRRA's MLM.

    Args:
        ignore_index: label of unmasked positions (-100).
        weighting: ``"inverse"`` (:math:`1/(1+u)`) or ``"none"`` (plain masked-token CE).
        detach_uncertainty: stop gradients into the uncertainty (True).
        reduction: ``"mean"`` (over masked tokens), ``"sum"``, or ``"none"`` (``[B, L]``, zero
            at ignored positions).
        check_finite: raise on NaN/inf logits or uncertainty and, on accelerators, on labels
            outside ``[0, V)`` (each check costs a host sync; on the CPU labels are always
            checked).

    Call arguments:
        logits: ``[B, L, V]`` token logits from the cross-modal module (any float dtype; the
            cross-entropy runs in float32).
        labels: ``[B, L]`` targets of any integer dtype, in ``[0, V)``, with ``ignore_index``
            at unmasked positions.
        uncertainty: ``[B]``, required for ``weighting="inverse"`` (negative values clamp to 0).

    Returns:
        A scalar, or ``[B, L]`` (float32, float64 for float64 logits). With no masked token the mean is 0 (connected).

    Raises:
        TypeError: non-float logits/uncertainty, non-integer (or bool) labels, a non-int
            ``ignore_index``.
        ValueError: wrong ranks or sizes, labels out of range, tensors on different devices,
            missing uncertainty, non-finite values, unknown ``weighting`` or ``reduction``.
    """

    def __init__(
        self,
        ignore_index: int = -100,
        weighting: str = "inverse",
        *,
        detach_uncertainty: bool = True,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        _check_amr_args("AttributeMaskReconstructionLoss", weighting, reduction)
        check_int(ignore_index, "ignore_index", "AttributeMaskReconstructionLoss")
        self.ignore_index = ignore_index
        self.weighting = weighting
        self.detach_uncertainty = detach_uncertainty
        self.reduction: Reduction = reduction
        self.check_finite = check_finite

    def forward(self, logits: Tensor, labels: Tensor, uncertainty: Tensor | None = None) -> Tensor:
        """Compute the loss; see the class docstring."""
        return _amr(
            "AttributeMaskReconstructionLoss", logits, labels, uncertainty, self.ignore_index,
            self.weighting, self.detach_uncertainty, self.reduction, self.check_finite,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"weighting={self.weighting!r}, reduction={self.reduction!r}"
