"""Symmetric InfoNCE (CLIP's contrastive loss), multi-positive when identities are given."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import Reduction
from textreid._numerics import check_temperature
from textreid.losses._common import DirectionalLosses, cosine_matrix
from textreid.losses.base import Hyperparameter, PairBatch, PairLoss, functional_twin

__all__ = ["InfoNCELoss", "infonce_loss"]

# CLIP clamps its learned scale at 100 so that the logits cannot blow up.
_MAX_LOGIT_SCALE = 100.0


def _positive_nll(logits: Tensor, match: Tensor) -> Tensor:
    """Per row: minus the mean log-softmax over the row's positives (0 for a row with none)."""
    log_p = F.log_softmax(logits, dim=1)
    pos = match.to(log_p.dtype)
    return -(log_p * pos).sum(dim=1) / pos.sum(dim=1).clamp_min(1.0)


class InfoNCELoss(PairLoss):
    r"""Symmetric InfoNCE / CLIP contrastive loss (Radford et al., "Learning Transferable
    Visual Models From Natural Language Supervision", ICML 2021, arXiv:2103.00020; InfoNCE:
    van den Oord et al., arXiv:1807.03748).

    With cosines :math:`s_{ij}`, scale :math:`1/\tau` and the positives
    :math:`P(i) = \{j : \mathrm{pid}_j = \mathrm{pid}_i\}` of each row:

    .. math::

        \ell_i = -\frac{1}{|P(i)|}\sum_{j\in P(i)} \log
            \frac{e^{s_{ij}/\tau}}{\sum_k e^{s_{ik}/\tau}}, \qquad
        \mathcal{L} = \tfrac12\Bigl[\frac{1}{B_i}\sum_i \ell_i
            + \frac{1}{B_t}\sum_j \ell'_j\Bigr]

    (:math:`\ell'` the same over the columns). Without ids every row has one positive, its own
    pair, and this is exactly CLIP's loss. With ids it is the multi-positive form that averages
    the log-likelihood over the positives (:math:`\mathcal{L}^{sup}_{out}` of Khosla et al.,
    "Supervised Contrastive Learning", NeurIPS 2020, arXiv:2004.11362), applied across
    modalities; same-identity captions are then never pushed apart. A row without any positive
    (possible with unequal sides) contributes 0.

    Args:
        temperature: :math:`\tau` (CLIP's initial value 0.07).
        learnable: ``True`` makes the module own CLIP's learnable ``log_scale`` parameter
            (initialised at :math:`\log(1/\tau)`, scale clamped at 100 as in CLIP); add
            ``loss.parameters()`` to the optimizer. Otherwise the temperature is fixed.
        reduction: ``"mean"`` (as above), ``"sum"`` (½ of the two sums) or ``"none"``
            (:class:`DirectionalLosses` of the unhalved row values).
        check_finite: raise on NaN/inf features.

    Call arguments: as :class:`~textreid.losses.SDMLoss`; ``logit_scale`` (e.g. a model's
    ``logit_scale.exp()``) overrides both the fixed and the learnable scale.

    Returns:
        A float32 (float64 for float64 inputs) scalar or :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`~textreid.losses.SDMLoss`.
    """

    uses_logit_scale = True
    halve_mean = True
    temperature = Hyperparameter(check_temperature)

    def __init__(
        self,
        temperature: float = 0.07,
        learnable: bool = False,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__(reduction=reduction, check_finite=check_finite)
        self.temperature = temperature
        self.log_scale: nn.Parameter | None = (
            nn.Parameter(torch.tensor(math.log(1.0 / temperature))) if learnable else None
        )

    def default_logit_scale(self) -> float | Tensor:
        if self.log_scale is not None:
            return self.log_scale.exp().clamp(max=_MAX_LOGIT_SCALE)
        return 1.0 / self.temperature

    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        logits = cosine_matrix(batch.image_feats, batch.text_feats, batch.dtype) * batch.logit_scale
        match = batch.match
        return DirectionalLosses(_positive_nll(logits, match), _positive_nll(logits.t(), match.t()))

    def extra_repr(self) -> str:
        learn = self.log_scale is not None
        return f"temperature={self.temperature}, learnable={learn}, reduction={self.reduction!r}"


_INFONCE = functional_twin(InfoNCELoss, "infonce_loss")


def infonce_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    logit_scale: float | Tensor | None = None,
    temperature: float = 0.07,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`InfoNCELoss` (fixed temperature unless ``logit_scale``)."""
    loss = _INFONCE(temperature, reduction=reduction, check_finite=check_finite)
    return loss.forward(
        image_feats, text_feats, pids, image_pids=image_pids, text_pids=text_pids,
        logit_scale=logit_scale,
    )  # fmt: skip
