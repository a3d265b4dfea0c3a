"""Masked language modelling: IRRA's masking rule and the cross-entropy over masked positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import (
    Reduction,
    check_finite,
    check_int,
    check_label_range,
    check_labels,
    check_positive,
    check_reduction,
    check_same_device,
    check_tensor,
)
from textreid._numerics import compute_dtype

__all__ = ["MLMLoss", "mask_for_mlm"]


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
    none = ~selected.any(dim=1)
    labels[none, 1] = rows[none, 1]
    masked[none, 1] = mask_token_id
    return masked.reshape(x.shape), labels.reshape(x.shape)


class MLMLoss(nn.Module):
    """Cross-entropy of the MLM head over the masked positions (IRRA's ``compute_mlm``).

    Jiang and Ye, "Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image
    Person Retrieval", CVPR 2023, arXiv 2303.12501.

    .. math::
        \\mathcal{L}_{mlm} = -\\frac{1}{|\\mathcal{M}|}\\sum_{(b, l) \\in \\mathcal{M}}
        \\log \\operatorname{softmax}(z_{b,l})_{y_{b,l}}, \\quad
        \\mathcal{M} = \\{(b, l) : y_{b,l} \\ne 0\\}

    The mean runs over the masked positions of the whole batch (``ignore_index=0``).

    Args:
        vocab_size: expected last dimension of ``logits`` (IRRA: 49408); None skips the check.
        reduction: ``"mean"`` (the paper's), ``"sum"`` or ``"none"`` (``[B, L]``, 0 where not
            masked).
        check_finite: raise on NaN/inf logits (one pass over them, one host sync per call).

    Shapes:
        logits ``[B, L, V]``, labels ``[B, L]`` of any integer dtype (0 = not masked) -> scalar.

    The label range check costs one host sync per call, on every device (out-of-range
    targets would otherwise end in a device-side assert on GPUs).

    Raises:
        ValueError: ``logits`` width differs from ``vocab_size``, shapes disagree, labels out of
            range, logits and labels on different devices, non-finite logits.
        TypeError: non-tensor or wrongly typed inputs (bool or floating labels).

    A batch without any masked position gives 0 (connected to the graph) instead of the NaN of
    ``nn.CrossEntropyLoss``.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if vocab_size is not None:
            check_int(vocab_size, "vocab_size", type(self).__name__, min_value=2)
        check_reduction(reduction, type(self).__name__)
        self.vocab_size = vocab_size
        self.reduction = reduction
        self.check_finite = check_finite

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, reduction={self.reduction!r}"

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        fn = type(self).__name__
        z = check_tensor(logits, "logits", fn, ndim=3, kind="float", dims="(B, L, V)")
        y = check_labels(labels, "labels", fn, ndim=2, dims="(B, L)")
        if self.vocab_size is not None and z.shape[-1] != self.vocab_size:
            raise ValueError(
                f"{fn}: logits has vocabulary size {z.shape[-1]} but vocab_size is "
                f"{self.vocab_size}"
            )
        if tuple(y.shape) != tuple(z.shape[:2]):
            raise ValueError(
                f"{fn}: labels has shape {tuple(y.shape)} but logits has {tuple(z.shape[:2])} "
                "(batch, tokens)"
            )
        check_same_device(fn, logits=z, labels=y)
        check_label_range(y, "labels", fn, z.shape[-1])
        if self.check_finite:
            check_finite(z, "logits", fn)
        per_token = F.cross_entropy(
            z.to(compute_dtype(z)).reshape(-1, z.shape[-1]),
            y.reshape(-1),
            ignore_index=0,
            reduction="none",
        ).reshape(y.shape)
        if self.reduction == "none":
            return per_token
        total = per_token.sum()
        if self.reduction == "sum":
            return total
        return total / (y != 0).sum().clamp(min=1)
