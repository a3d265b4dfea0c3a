r"""UCA-style point contrast: inter- and intra-modal contrast over points sampled from Gaussians.

UCA (Deng, Chen, Li, Tang, "Uncertainty-aware coarse-to-fine alignment for text-image person
retrieval", Visual Intelligence, 2025, doi:10.1007/s44267-025-00078-x) publishes no formulas
or code; :class:`PointContrastLoss` implements the objective its abstract names with choices
of ours, stated in its docstring.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from textreid._checks import Reduction
from textreid._numerics import check_temperature, l2_normalize
from textreid.heads.gaussian import GaussianEmbedding
from textreid.losses._common import DirectionalLosses, pid_match
from textreid.losses._gaussian import soft_target_ce
from textreid.losses.base import (
    GaussianPairBatch,
    GaussianPairLoss,
    Hyperparameter,
    count,
    functional_twin,
    non_negative,
)

__all__ = ["PointContrastLoss", "point_contrast_loss"]


class PointContrastLoss(GaussianPairLoss):
    r"""Point contrast: inter- and intra-modal contrast over sampled points (the "point
    contrast learning" of UCA, Deng et al., Visual Intelligence 2025,
    doi:10.1007/s44267-025-00078-x; the formula is ours, the paper's is not public).

    Each item draws ``K`` points :math:`z = \mu + \epsilon\odot\sigma` (reparameterised, so
    the loss trains the variances too), L2-normalised; :math:`s = \cos(z, z')/\tau`. For the
    :math:`k`-th point of image :math:`i`, with positives :math:`P_i` = every point of every
    caption of the same identity:

    .. math::

        \ell^{v\to t}_{ik} = -\frac{1}{|P_i|}\sum_{(j,k') \in P_i}
            \log\frac{e^{s(z_i^k, z_j^{k'})}}{\frac1{K}\sum_{j',k''} e^{s(z_i^k, z_{j'}^{k''})}},
        \qquad \ell^{v\to t}_i = \frac1K\sum_k \ell^{v\to t}_{ik}

    and likewise for captions; the intra-modal terms use the points of the same modality
    (image–image, caption–caption) with the anchor point itself removed, and are added to the
    rows with weight ``intra_modal_weight``.

    Our choices and why: averaging (the :math:`\frac1K`) rather than summing the partition
    function over a candidate's samples makes every item count once, so as
    :math:`\sigma \to 0` the cross-modal term equals the deterministic multi-positive InfoNCE
    on the means (tested); cosine similarity with the IRRA/CLIP temperature 0.02; identity
    positives; intra-modal weight 1.

    Args:
        num_samples: ``K`` when the loss draws the points (ours: 7, PCME's value).
        temperature: :math:`\tau` (0.02).
        intra_modal_weight: weight of the intra-modal terms (1; 0 disables them).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (:class:`DirectionalLosses`).
        check_finite: raise on NaN/inf inputs (and given samples) and on values that overflow
            (an extra host sync).

    Call arguments:
        image, text: :class:`GaussianEmbedding` ``[B_i, D]``, ``[B_t, D]``.
        pids / image_pids, text_pids: identities (default: instance labels).
        logit_scale: a multiplier replacing :math:`1/\tau` for this call.
        image_samples, text_samples: optional precomputed points ``[B, K, D]``.
        generator: RNG for the drawn points.
        match: refused (``TypeError``): the positives come from the identities.

    Returns:
        A scalar, or :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`CSDLoss`, plus ``num_samples < 1``, a bad samples
            shape, a non-positive ``temperature``, a negative ``intra_modal_weight``.
    """

    uses_logit_scale = True
    uses_samples = True
    num_samples = Hyperparameter(count)
    temperature = Hyperparameter(check_temperature)
    intra_modal_weight = Hyperparameter(non_negative)

    def __init__(
        self,
        num_samples: int = 7,
        temperature: float = 0.02,
        intra_modal_weight: float = 1.0,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__(reduction=reduction, check_finite=check_finite)
        self.num_samples = num_samples
        self.temperature = temperature
        self.intra_modal_weight = intra_modal_weight

    def default_logit_scale(self) -> float:
        return 1.0 / self.temperature

    def sample(self, g: GaussianEmbedding, generator: torch.Generator | None) -> Tensor:
        return g.sample(self.num_samples, generator)

    def compute_loss(self, batch: GaussianPairBatch) -> DirectionalLosses:
        # the eps of the normalisation follows the caller's dtype, where the gradients land
        zv, zt = (l2_normalize(s, grad_dtype=batch.input_dtype) for s in batch.samples)
        ip, tp, scale, match = batch.image_pids, batch.text_pids, batch.logit_scale, batch.match
        i2t = _point_rows(zv, zt, match, scale, exclude_self=False)
        t2i = _point_rows(zt, zv, match.T, scale, exclude_self=False)
        if (w := self.intra_modal_weight) != 0:
            i2t = i2t + w * _point_rows(zv, zv, pid_match(ip, ip), scale, exclude_self=True)
            t2i = t2i + w * _point_rows(zt, zt, pid_match(tp, tp), scale, exclude_self=True)
        return DirectionalLosses(i2t, t2i)


def _point_rows(
    anchors: Tensor, others: Tensor, positives: Tensor, scale: float | Tensor, exclude_self: bool
) -> Tensor:
    """Per anchor item: mean over its K samples of the multi-positive CE over all samples."""
    (b, k, d), (c, k2, _) = anchors.shape, others.shape
    logits = (anchors.reshape(b * k, d) @ others.reshape(c * k2, d).T) * scale
    pos = positives[:, None, :, None].expand(b, k, c, k2).reshape(b * k, c * k2)
    if exclude_self:
        eye = torch.eye(b * k, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(eye, torch.finfo(logits.dtype).min)
        pos = pos & ~eye
    # + log K': the denominator averages (not sums) the partition over the K' samples, so the
    # zero-variance limit is exactly the deterministic loss on the means
    return soft_target_ce(logits, pos, math.log(k2)).reshape(b, k).mean(dim=1)


_PC = functional_twin(PointContrastLoss, "point_contrast_loss")


def point_contrast_loss(
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    logit_scale: float | Tensor | None = None,
    image_samples: Tensor | None = None,
    text_samples: Tensor | None = None,
    generator: torch.Generator | None = None,
    num_samples: int = 7,
    temperature: float = 0.02,
    intra_modal_weight: float = 1.0,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`PointContrastLoss` (same arguments, same result)."""
    loss = _PC(
        num_samples=num_samples, temperature=temperature, intra_modal_weight=intra_modal_weight,
        reduction=reduction, check_finite=check_finite,
    )  # fmt: skip
    return loss.forward(
        image, text, pids, image_pids=image_pids, text_pids=text_pids, logit_scale=logit_scale,
        image_samples=image_samples, text_samples=text_samples, generator=generator,
    )  # fmt: skip
