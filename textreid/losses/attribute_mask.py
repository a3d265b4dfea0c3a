r"""The uncertainty-weighted reconstruction loss of masked attribute words (UCA-style).

UCA (Deng, Chen, Li, Tang, Visual Intelligence 2025, doi:10.1007/s44267-025-00078-x) masks
attribute words of the caption (:mod:`textreid.text.attributes`) and reconstructs them from
the cross-modal interaction of sampled points, weighting by uncertainty. Its weighting is not
public; the choice below is ours and stated where it is made.
"""

from __future__ import annotations

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
from textreid._deprecation import moved
from textreid._numerics import compute_dtype

__all__ = ["AttributeMaskReconstructionLoss", "attribute_mask_reconstruction_loss"]

__getattr__ = moved(
    __name__,
    {
        name: f"textreid.text.{name}"
        for name in (
            "PEDESTRIAN_ATTRIBUTE_WORDS",
            "PEDESTRIAN_COLOR_WORDS",
            "PEDESTRIAN_GARMENT_WORDS",
            "AttributeMasking",
            "attribute_positions",
            "attribute_token_sequences",
            "mask_attribute_tokens",
        )
    },
    since="0.1",
    removed_in="1.0",
)


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

    The caller masks attribute words (:func:`~textreid.text.mask_attribute_tokens`), runs any
    cross-modal module on the masked caption and the image's sampled points, and passes the
    token logits.
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
