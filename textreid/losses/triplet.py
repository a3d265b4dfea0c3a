"""Bidirectional hinge triplet loss with hardest or summed negatives (VSE++ style)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from textreid._checks import Reduction
from textreid.losses._common import DirectionalLosses, cosine_matrix
from textreid.losses.base import (
    Hyperparameter,
    PairBatch,
    PairLoss,
    functional_twin,
    non_negative,
    one_of,
)

__all__ = ["TripletLoss", "triplet_loss"]

Mining = Literal["hardest", "sum"]
_MINING = ("hardest", "sum")


def _hardest(sim: Tensor, match: Tensor, margin: float) -> Tensor:
    """``[A, C]``: ``[m - s_ij + max_{k ∉ P(i)} s_ik]_+`` for every anchor/column pair."""
    # A row without negatives takes the dtype's minimum, so its hinge is exactly 0.
    hardest = sim.masked_fill(match, torch.finfo(sim.dtype).min).amax(dim=1, keepdim=True)
    return (margin - sim + hardest).clamp_min(0.0)


def _summed(sim: Tensor, match: Tensor, margin: float) -> Tensor:
    """``[A, C]``: ``Σ_{k ∉ P(i)} [m - s_ij + s_ik]_+`` in O(A·C log C) time and O(A·C) memory.

    For a fixed anchor and ``c = m - s_ij``, the sum is ``r·c + (sum of the r largest
    negatives)`` with ``r`` the number of negatives above ``-c``: one sort and a cumulative sum
    per row replace the ``[A, C, C]`` tensor of all triplets.
    """
    # Masked columns get a value below every threshold -c >= -(m + 1) (|cosine| <= 1).
    neg = sim.masked_fill(match, -(margin + 2.0))
    desc = neg.sort(dim=1, descending=True).values
    top_sums = torch.cat([desc.new_zeros(desc.shape[0], 1), desc.cumsum(dim=1)], dim=1)
    c = margin - sim
    below_or_at = torch.searchsorted(
        desc.detach().flip(1).contiguous(), (-c).detach().contiguous(), right=True
    )
    count = desc.shape[1] - below_or_at
    return count.to(sim.dtype) * c + top_sums.gather(1, count)


def _anchor_rows(sim: Tensor, match: Tensor, margin: float, mining: str) -> Tensor:
    """Per anchor: the hinge averaged over the anchor's positives (0 for a row without any)."""
    hinge = _hardest(sim, match, margin) if mining == "hardest" else _summed(sim, match, margin)
    pos = match.to(sim.dtype)
    return (hinge * pos).sum(dim=1) / pos.sum(dim=1).clamp_min(1.0)


class TripletLoss(PairLoss):
    r"""Bidirectional ranking (triplet) loss of VSE++ (Faghri et al., "VSE++: Improving
    Visual-Semantic Embeddings with Hard Negatives", BMVC 2018, arXiv:1707.05612), made
    identity-aware: a caption of the same person is never a negative.

    With cosines :math:`s_{ij}`, positives :math:`P(i)` (same identity on the other side) and
    negatives :math:`N(i)` (all others), per image anchor :math:`i`:

    .. math::

        \ell_i = \frac{1}{|P(i)|}\sum_{j\in P(i)}
        \begin{cases}
          \bigl[m - s_{ij} + \max_{k\in N(i)} s_{ik}\bigr]_+ & \text{mining="hardest" (VSE++ MH)}\\
          \sum_{k\in N(i)} \bigl[m - s_{ij} + s_{ik}\bigr]_+ & \text{mining="sum" (VSE0 / SH)}
        \end{cases}

    and :math:`\ell'_j` the same for caption anchors (columns);
    :math:`\mathcal{L} = \frac{1}{B_i}\sum_i \ell_i + \frac{1}{B_t}\sum_j \ell'_j`.
    Without ids each row's only positive is its own pair and this is VSE++ exactly (up to the
    reduction, below). Anchors without positives or negatives contribute 0.

    Args:
        margin: :math:`m` (VSE++: 0.2).
        mining: ``"hardest"`` (VSE++'s max-violation) or ``"sum"`` (all violating negatives;
            computed with a per-row sort, no ``[B, B, B]`` tensor).
        reduction: ``"mean"`` (average over anchors, per direction, summed), ``"sum"`` (VSE++'s
            code: summed over anchors) or ``"none"`` (:class:`DirectionalLosses`).
        check_finite: raise on NaN/inf features.

    Call arguments: as :class:`~textreid.losses.SDMLoss`, except ``logit_scale``, which is
    refused: the hinge compares raw cosines with the margin, and scaling them would only rescale
    the margin.

    Returns:
        A float32 (float64 for float64 inputs) scalar or :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`~textreid.losses.SDMLoss`, plus a negative ``margin``
            or an unknown ``mining``; ``TypeError`` for a ``logit_scale``.

    Differences from the reference code:
        VSE++ sums over the batch; ``"mean"`` divides that sum by the number of anchors, which
        makes the loss independent of the batch size (``reduction="sum"`` reproduces VSE++).
    """

    no_logit_scale_reason = (
        "the hinge compares unscaled cosines with the margin; scaling them would only rescale "
        "the margin"
    )
    margin = Hyperparameter(non_negative)
    mining = Hyperparameter(one_of(_MINING))

    def __init__(
        self,
        margin: float = 0.2,
        mining: Mining = "hardest",
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__(reduction=reduction, check_finite=check_finite)
        self.margin = margin
        self.mining = mining

    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        sim = cosine_matrix(batch.image_feats, batch.text_feats, batch.dtype)
        match = batch.match
        return DirectionalLosses(
            _anchor_rows(sim, match, self.margin, self.mining),
            _anchor_rows(sim.t(), match.t(), self.margin, self.mining),
        )


_TRIPLET = functional_twin(TripletLoss, "triplet_loss")


def triplet_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    logit_scale: float | Tensor | None = None,
    margin: float = 0.2,
    mining: Mining = "hardest",
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`TripletLoss` (same arguments, same result)."""
    loss = _TRIPLET(margin, mining, reduction=reduction, check_finite=check_finite)
    return loss.forward(
        image_feats, text_feats, pids, image_pids=image_pids, text_pids=text_pids,
        logit_scale=logit_scale,
    )  # fmt: skip
