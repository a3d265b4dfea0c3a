"""Masked language modelling: the cross-entropy over masked positions (IRRA).

The masking itself is text preparation: :func:`textreid.text.mask_for_mlm`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import (
    Reduction,
    check_finite,
    check_int,
    check_label_range,
    check_labels,
    check_reduction,
    check_same_device,
    check_tensor,
)
from textreid._deprecation import moved
from textreid._numerics import compute_dtype

__all__ = ["MLMLoss"]

__getattr__ = moved(
    __name__, {"mask_for_mlm": "textreid.text.mask_for_mlm"}, since="0.1", removed_in="1.0"
)


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
