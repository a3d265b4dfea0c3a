"""Pieces every matching loss shares: validation, the identity-match matrix, scales, reductions."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from textreid._checks import (
    check_features,
    check_finite,
    check_reduction,
    check_same_device,
    check_same_width,
    check_tensor,
    checks_are_eager,
    require,
    resolve_pids,
)
from textreid._numerics import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    check_temperature,
    compute_dtype,
    l2_normalize,
)

__all__ = [
    "DirectionalLosses",
    "check_classifier",
    "check_logit_scale",
    "compute_dtype",
    "cosine_matrix",
    "kl_rows",
    "match_kl",
    "pid_match",
    "prepare_pair",
    "reduce_directional",
    "resolve_logit_scale",
]


class DirectionalLosses(NamedTuple):
    """Per-sample values of a bidirectional loss (``reduction="none"``).

    Attributes:
        image_to_text: ``[B_i]``, one value per image row (image anchors, texts ranked).
        text_to_image: ``[B_t]``, one value per caption row (text anchors, images ranked).
    """

    image_to_text: Tensor
    text_to_image: Tensor


def pid_match(image_pids: Tensor, text_pids: Tensor) -> Tensor:
    """Bool ``[B_i, B_t]`` with ``True`` where image ``i`` and caption ``j`` share an identity."""
    return image_pids[:, None] == text_pids[None, :]


def prepare_pair(
    fn: str,
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    *,
    finite: bool = True,
    default_instance: bool = True,
) -> tuple[Tensor, Tensor]:
    """Validate a ``(image_feats [B_i, D], text_feats [B_t, D])`` pair and resolve the ids.

    Checks run from cheap to expensive (the finite check syncs with the device, and it must
    come after the device check because ``meta`` tensors hold no values).

    Returns:
        ``(image_pids [B_i], text_pids [B_t])``; instance ids ``arange(B)`` when no ids are
        given and ``default_instance`` is true.
    """
    check_features(image_feats, "image_feats", fn, finite=False)
    check_features(text_feats, "text_feats", fn, finite=False)
    check_same_width(fn, image_feats, "image_feats", text_feats, "text_feats")
    check_same_device(fn, image_feats=image_feats, text_feats=text_feats)
    ip, tp = resolve_pids(
        fn, image_feats, text_feats, pids, image_pids, text_pids, default_instance=default_instance
    )
    if finite:
        check_finite(image_feats, "image_feats", fn)
        check_finite(text_feats, "text_feats", fn)
    return ip, tp


def resolve_logit_scale(
    fn: str,
    temperature: float,
    logit_scale: float | Tensor | None,
    device: torch.device,
    *,
    finite: bool = True,
) -> float | Tensor:
    """The multiplier applied to cosine similarities: ``logit_scale`` if given, else ``1/τ``.

    See :func:`check_logit_scale` for what a given ``logit_scale`` must be.
    """
    if logit_scale is None:
        return 1.0 / temperature
    return check_logit_scale(fn, logit_scale, device, finite=finite)


def check_logit_scale(
    fn: str, logit_scale: object, device: torch.device, *, finite: bool = True
) -> float | Tensor:
    """A call's ``logit_scale``, validated: a float, or a one-element tensor clamped into range.

    A float ``logit_scale`` must lie in ``[1e-4, 1e4]`` (see
    :data:`textreid._numerics.MIN_TEMPERATURE`), so ``scale · |cos|`` cannot overflow.

    A tensor ``logit_scale`` (e.g. ``model.logit_scale.exp()``) must hold one floating value on
    the features' device; it keeps its gradient. Reading its value costs a host sync, so it is
    checked (finite, in range) only where value checks are eager (the CPU, or under
    :func:`textreid.eager_checks`) and when ``finite`` (the caller's ``check_finite``);
    otherwise it is clamped into the range in the graph, which bounds an overflowing scale but
    lets a NaN through.
    """
    if isinstance(logit_scale, Tensor):
        check_tensor(logit_scale, "logit_scale", fn, kind="float", allow_empty=True)
        if logit_scale.numel() != 1:
            raise ValueError(
                f"{fn}: logit_scale must hold a single value, got shape {tuple(logit_scale.shape)}"
            )
        if logit_scale.device != device:
            raise ValueError(
                f"{fn}: image_feats is on {device} but logit_scale is on {logit_scale.device}"
            )
        if finite and checks_are_eager(logit_scale.device):
            check_temperature(float(logit_scale.detach()), "logit_scale", fn)
        return logit_scale.reshape(()).clamp(MIN_TEMPERATURE, MAX_TEMPERATURE)
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)):
        raise TypeError(
            f"{fn}: logit_scale must be a float or a 1-element tensor, "
            f"got {type(logit_scale).__name__}"
        )
    return check_temperature(logit_scale, "logit_scale", fn)


def cosine_matrix(image_feats: Tensor, text_feats: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B_i, B_t]`` cosine similarities computed in ``dtype``, rows normalised by
    :func:`~textreid._numerics.l2_normalize` (a zero row has cosine 0 with everything)."""
    return l2_normalize(image_feats, 1, dtype=dtype) @ l2_normalize(text_feats, 1, dtype=dtype).t()


def kl_rows(logits: Tensor, match: Tensor, norm: Literal["l1", "l2"], epsilon: float) -> Tensor:
    """Per row of ``logits [R, C]``: ``KL(p ‖ q)`` with ``p = softmax`` of the row.

    ``q`` is the row of the bool ``match [R, C]`` divided by its L1 (SDM) or L2 (CMPM) norm,
    with ``epsilon`` added inside the log. A row without any match has ``q = 0`` and so
    measures ``KL`` against the ``epsilon`` floor (a finite value that pushes the row towards
    uniform).
    """
    y = match.to(logits.dtype)
    denom = y.sum(dim=1, keepdim=True) if norm == "l1" else y.norm(dim=1, keepdim=True)
    log_q = torch.log(y / denom.clamp_min(1.0) + epsilon)
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def match_kl(
    logits: Tensor, match: Tensor, norm: Literal["l1", "l2"], epsilon: float
) -> DirectionalLosses:
    """:func:`kl_rows` of a ``[B_i, B_t]`` logit matrix over its rows and over its columns."""
    return DirectionalLosses(
        kl_rows(logits, match, norm, epsilon), kl_rows(logits.t(), match.t(), norm, epsilon)
    )


def reduce_directional(
    losses: DirectionalLosses, reduction: str, fn: str, *, half: bool = False
) -> Tensor | DirectionalLosses:
    """Apply ``reduction`` to per-row values of both directions.

    ``"mean"``: mean over image rows plus mean over text rows (times ½ when ``half``, the CLIP
    convention); ``"sum"``: the same with sums; ``"none"``: the two vectors unchanged.
    """
    check_reduction(reduction, fn)
    if reduction == "none":
        return losses
    i2t, t2i = losses
    total = i2t.mean() + t2i.mean() if reduction == "mean" else i2t.sum() + t2i.sum()
    return total * 0.5 if half else total


def check_classifier(fn: str, weight: Tensor, feats: Tensor, *labels: Tensor) -> None:
    """A ``[C, D]`` weight matching ``feats`` in width and device; labels in ``0..C-1``.

    The range check is a value check (:func:`textreid._checks.require`): a ``ValueError`` on
    the CPU, a device-side assert on accelerators, where ``cross_entropy`` would otherwise
    index out of range.
    """
    check_tensor(weight, "weight", fn, ndim=2, kind="float", dims="(C, D)")
    if weight.shape[1] != feats.shape[1]:
        raise ValueError(
            f"{fn}: the classifier has width {weight.shape[1]} but the features have width "
            f"{feats.shape[1]}"
        )
    check_same_device(fn, image_feats=feats, weight=weight)
    num_classes = weight.shape[0]
    expected = f"{fn}: pids must lie in 0..{num_classes - 1} (num_classes={num_classes})"
    for lab in labels:

        def message(lab: Tensor = lab) -> str:
            return f"{expected}, got values in {int(lab.min())}..{int(lab.max())}"

        require(((lab >= 0) & (lab < num_classes)).all(), message, expected)
