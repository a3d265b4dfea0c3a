"""Adaptive Similarity Distribution Matching (A-SDM), FMFA's re-weighted SDM."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from textreid._checks import Reduction, check_positive, check_reduction
from textreid._numerics import check_temperature
from textreid.losses._common import (
    DirectionalLosses,
    compute_dtype,
    cosine_matrix,
    match_kl,
    pid_match,
    prepare_pair,
    reduce_directional,
    resolve_logit_scale,
)

__all__ = ["ASDMLoss", "asdm_loss"]


def _check_asdm_args(
    fn: str, alpha: float, temperature: float, epsilon: float, reduction: str
) -> None:
    check_positive(alpha, "alpha", fn, allow_zero=True)
    check_temperature(temperature, "temperature", fn)
    check_positive(epsilon, "epsilon", fn)
    check_reduction(reduction, fn)


def _row_weights(sim: Tensor, logits: Tensor, match: Tensor, alpha: float, detach: bool) -> Tensor:
    """``1 + α (s_{i,a_i} - s_{i,b_i})`` where the top-1 ``a_i`` differs from the first match."""
    rows = torch.arange(sim.shape[0], device=sim.device)
    top = logits.argmax(dim=1)
    # argmax of a bool row returns its first True: the reference's "first positive" index.
    first = match.to(torch.uint8).argmax(dim=1)
    has_match = match.any(dim=1)
    gap = sim[rows, top] - sim[rows, first]
    gap = torch.where((top != first) & has_match, gap, torch.zeros_like(gap))
    w = 1.0 + alpha * gap
    return w.detach() if detach else w


def _asdm(
    fn: str,
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    logit_scale: float | Tensor | None,
    alpha: float,
    temperature: float,
    epsilon: float,
    detach_weight: bool,
    reduction: str,
    check_finite: bool,
) -> Tensor | DirectionalLosses:
    _check_asdm_args(fn, alpha, temperature, epsilon, reduction)
    ip, tp = prepare_pair(
        fn, image_feats, text_feats, pids, image_pids, text_pids, finite=check_finite
    )
    scale = resolve_logit_scale(
        fn, temperature, logit_scale, image_feats.device, finite=check_finite
    )
    sim = cosine_matrix(image_feats, text_feats, compute_dtype(image_feats, text_feats))
    logits = sim * scale
    match = pid_match(ip, tp)
    i2t, t2i = match_kl(logits, match, "l1", epsilon)
    w_i2t = _row_weights(sim, logits, match, alpha, detach_weight)
    w_t2i = _row_weights(sim.t(), logits.t(), match.t(), alpha, detach_weight)
    return reduce_directional(DirectionalLosses(w_i2t * i2t, w_t2i * t2i), reduction, fn)


def asdm_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    logit_scale: float | Tensor | None = None,
    alpha: float = 0.1,
    temperature: float = 0.02,
    epsilon: float = 1e-8,
    detach_weight: bool = False,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`ASDMLoss` (same arguments, same result)."""
    return _asdm(
        "asdm_loss", image_feats, text_feats, pids, image_pids, text_pids, logit_scale,
        alpha, temperature, epsilon, detach_weight, reduction, check_finite,
    )  # fmt: skip


class ASDMLoss(nn.Module):
    r"""Adaptive SDM of FMFA (Yin et al., "Explicit Fine-grained Alignment ... (FMFA)",
    2025, arXiv:2509.13754; reference code github.com/yinhao1102/FMFA).

    :class:`SDMLoss`'s row terms, each multiplied by a weight that grows with how far the
    row's top-1 retrieval lies above its *first* true match. With cosines :math:`s`, logits
    :math:`s/\tau`, :math:`a_i = \arg\max_j s_{ij}` and :math:`b_i` the first column with
    the same identity as row :math:`i`:

    .. math::

        w_i = 1 + \alpha\,(s_{i a_i} - s_{i b_i})\,[a_i \ne b_i], \qquad
        \mathcal{L}_{asdm} = \frac{1}{B_i}\sum_i w_i\,\mathrm{KL}(p_i\|q_i)
            + \frac{1}{B_t}\sum_j w'_j\,\mathrm{KL}(p'_j\|q'_j)

    with :math:`w'_j` the same rule on the text rows (columns of :math:`s`). The *first-positive
    rule* is the reference's: a row whose top-1 is a correct but not the first same-identity
    column still gets :math:`w > 1`. It is defined for unequal sides too (``image_pids`` /
    ``text_pids``): :math:`b` is the first column on the other side with the same identity; a row
    with no match on the other side gets :math:`w = 1`.

    Args:
        alpha: weight slope :math:`\alpha` (0.1 in FMFA's released HEAD code; 10 in its first
            released version).
        temperature, epsilon: as :class:`SDMLoss` (0.02, 1e-8).
        detach_weight: ``False`` (reference behaviour): gradients also flow through the gap
            :math:`s_{i a_i} - s_{i b_i}`, i.e. the weight itself is trained; ``True`` treats the
            weights as constants (a pure re-weighting of SDM).
        reduction, check_finite: as :class:`SDMLoss`; ``"none"`` gives weighted row values.

    Call arguments, returns (float32, or float64 for float64 inputs) and raises: as
    :class:`SDMLoss`; additionally ``ValueError`` for a negative ``alpha``.

    Differences from the reference code:
        Same as :class:`SDMLoss` (float32 labels in float64 runs; unguarded norms); the
        reference hard-codes :math:`\alpha` (0.1) in its HEAD version.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        temperature: float = 0.02,
        epsilon: float = 1e-8,
        detach_weight: bool = False,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        _check_asdm_args("ASDMLoss", alpha, temperature, epsilon, reduction)
        self.alpha = alpha
        self.temperature = temperature
        self.epsilon = epsilon
        self.detach_weight = detach_weight
        self.reduction: Reduction = reduction
        self.check_finite = check_finite

    def forward(
        self,
        image_feats: Tensor,
        text_feats: Tensor,
        pids: Tensor | None = None,
        *,
        image_pids: Tensor | None = None,
        text_pids: Tensor | None = None,
        logit_scale: float | Tensor | None = None,
    ) -> Tensor | DirectionalLosses:
        """Compute the loss; see the class docstring for shapes and dtypes."""
        return _asdm(
            "ASDMLoss", image_feats, text_feats, pids, image_pids, text_pids, logit_scale,
            self.alpha, self.temperature, self.epsilon, self.detach_weight, self.reduction,
            self.check_finite,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, temperature={self.temperature}, epsilon={self.epsilon}, "
            f"detach_weight={self.detach_weight}, reduction={self.reduction!r}"
        )
