"""Adaptive Similarity Distribution Matching (A-SDM), FMFA's re-weighted SDM."""

from __future__ import annotations

import torch
from torch import Tensor

from textreid._checks import Reduction
from textreid._numerics import check_temperature
from textreid.losses._common import DirectionalLosses, cosine_matrix, match_kl
from textreid.losses.base import (
    Hyperparameter,
    PairBatch,
    PairLoss,
    flag,
    functional_twin,
    non_negative,
    positive,
)

__all__ = ["ASDMLoss", "asdm_loss"]


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


class ASDMLoss(PairLoss):
    r"""Adaptive SDM of FMFA (Yin et al., "Cross-modal Full-mode Fine-grained Alignment for Text-to-Image Person Retrieval",
    ACM TOMM, arXiv:2509.13754, 2025; reference code github.com/yinhao1102/FMFA).

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
    :class:`SDMLoss`; additionally ``ValueError`` for a negative ``alpha`` and ``TypeError`` for
    a ``detach_weight`` that is not a bool.

    Differences from the reference code:
        Same as :class:`SDMLoss` (float32 labels in float64 runs; unguarded norms); the
        reference hard-codes :math:`\alpha` (0.1) in its HEAD version.
    """

    uses_logit_scale = True
    alpha = Hyperparameter(non_negative)
    temperature = Hyperparameter(check_temperature)
    epsilon = Hyperparameter(positive)
    detach_weight = Hyperparameter(flag)

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
        super().__init__(reduction=reduction, check_finite=check_finite)
        self.alpha = alpha
        self.temperature = temperature
        self.epsilon = epsilon
        self.detach_weight = detach_weight

    def default_logit_scale(self) -> float:
        return 1.0 / self.temperature

    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        sim = cosine_matrix(batch.image_feats, batch.text_feats, batch.dtype)
        logits = sim * batch.logit_scale
        match = batch.match
        i2t, t2i = match_kl(logits, match, "l1", self.epsilon)
        w_i2t = _row_weights(sim, logits, match, self.alpha, self.detach_weight)
        w_t2i = _row_weights(sim.t(), logits.t(), match.t(), self.alpha, self.detach_weight)
        return DirectionalLosses(w_i2t * i2t, w_t2i * t2i)


_ASDM = functional_twin(ASDMLoss, "asdm_loss")


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
    loss = _ASDM(
        alpha, temperature, epsilon, detach_weight, reduction=reduction, check_finite=check_finite
    )
    return loss.forward(
        image_feats, text_feats, pids, image_pids=image_pids, text_pids=text_pids,
        logit_scale=logit_scale,
    )  # fmt: skip
