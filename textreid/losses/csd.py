r"""PCME++: the closed-form sampled-distance loss with pseudo-positives (ICLR 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from textreid._checks import Reduction, check_tensor
from textreid._gaussian_math import distance_matrix
from textreid.heads.gaussian import GaussianEmbedding
from textreid.losses._common import DirectionalLosses
from textreid.losses._gaussian import elementwise_kl
from textreid.losses.base import (
    GaussianPairBatch,
    Hyperparameter,
    _AffineLogits,
    affine_twin,
    non_negative,
    one_of,
)

__all__ = ["CSDLoss", "csd_loss", "pseudo_positive_match"]


def pseudo_positive_match(logits: Tensor, match: Tensor) -> Tensor:
    r"""PCME++'s pseudo-positive relabelling of one direction (no gradient).

    For each row :math:`i`, take the first column :math:`g_i` holding the row's largest label
    (its first positive) and relabel every column whose logit is at least
    :math:`\ell_{i,g_i}` with that label:
    :math:`\tilde M_{ij} = M_{i,g_i}` if :math:`\ell_{ij} \ge \ell_{i,g_i}`, else
    :math:`M_{ij}`. A row without positives keeps its labels.

    Args:
        logits: ``[R, C]`` match logits (higher = more likely a match).
        match: ``[R, C]`` labels (bool or float in [0, 1]).

    Returns:
        ``[R, C]`` relabelled match matrix in ``logits.dtype``.

    Raises:
        TypeError, ValueError: not 2-D tensors of the same shape.
    """
    fn = "pseudo_positive_match"
    lg = check_tensor(logits, "logits", fn, ndim=2, kind="float", dims="(R, C)")
    m = check_tensor(match, "match", fn, ndim=2, dims="(R, C)")
    if lg.shape != m.shape:
        raise ValueError(f"{fn}: logits has shape {tuple(lg.shape)} but match has {tuple(m.shape)}")
    with torch.no_grad():
        mf = m.to(lg.dtype)
        labels = mf.amax(dim=1)
        first = mf.argmax(dim=1)
        threshold = lg.gather(1, first[:, None])
        return torch.where(lg >= threshold, labels[:, None], mf)


class CSDLoss(_AffineLogits):
    r"""PCME++ closed-form sampled-distance loss (Chun, "Improved Probabilistic Image-Text
    Representations", ICLR 2024, arXiv:2305.15583).

    With :math:`d_{ij}` the closed-form sampled distance
    (:func:`~textreid.heads.csd_distance`), logits :math:`\ell_{ij} = -a\,d_{ij} + b`,
    labels :math:`M_{ij} = [\mathrm{pid}_i = \mathrm{pid}_j]` and the pseudo-positive labels
    :math:`\tilde M` of :func:`pseudo_positive_match`:

    .. math::

        \mathcal L = 2\,\overline{\mathrm{BCE}}(\ell, M)
          + \alpha\big[\overline{\mathrm{BCE}}(\ell, \tilde M^{i\to t})
          + \overline{\mathrm{BCE}}(\ell^\top, \tilde M^{t\to i})\big]
          + \beta\big[\overline{\mathrm{KL}}_v + \overline{\mathrm{KL}}_t\big]

    where :math:`\overline{\cdot}` averages over all entries (pairs; or ``B·D`` for the KL to
    :math:`N(0, I)`). The :math:`2\,\overline{\mathrm{BCE}}` is the image→text plus the
    text→image term (identical).

    Args:
        init_negative_scale: initial :math:`a` (paper: 5). init_shift: initial :math:`b` (5).
        kl_beta: :math:`\beta` (paper: 1e-4).
        pseudo_positive_alpha: :math:`\alpha` (paper: 0.1; 0 disables pseudo-positives).
        distance: ``"csd"`` (paper) or ``"wasserstein"`` (the squared 2-Wasserstein ablation).
        reduction: ``"mean"`` (the paper's), ``"sum"`` (sums of row means) or ``"none"``
            (:class:`DirectionalLosses` of row values: the row's mean BCE terms plus its item's
            :math:`\beta\,\overline{\mathrm{KL}}`).
        check_finite: raise on NaN/inf inputs (and given samples) and on values that overflow
            (an extra host sync).

    Call arguments:
        image, text: :class:`GaussianEmbedding` ``[B_i, D]``, ``[B_t, D]``.
        pids / image_pids, text_pids: identities (default: instance labels).
        match: optional ``[B_i, B_t]`` soft labels in [0, 1] instead of ids (e.g. mixed
            samples); the pseudo-positive label of a row is its largest value.
        logit_scale, image_samples, text_samples, generator: refused (``TypeError``):
            :math:`a` is a learned scale, not a temperature, and the distance is in closed
            form, so nothing is sampled.

    Returns:
        A scalar, or :class:`DirectionalLosses` for ``"none"``.

    Raises:
        TypeError: inputs of the wrong type, or an argument that cannot apply.
        ValueError: empty batch, width/device/row mismatch, non-finite values, ``match`` with
            ``pids`` or of the wrong shape, negative ``kl_beta``/``pseudo_positive_alpha``,
            unknown ``distance`` or ``reduction``.

    Differences from the reference code:
        The reference skips the KL term (returns 0) when it exceeds 1e4; here it never skips.
        Labels default to identity matches instead of the diagonal.
    """

    uses_match = True
    kl_beta = Hyperparameter(non_negative)
    pseudo_positive_alpha = Hyperparameter(non_negative)
    distance = Hyperparameter(one_of(("csd", "wasserstein")))

    def __init__(
        self,
        init_negative_scale: float = 5.0,
        init_shift: float = 5.0,
        kl_beta: float = 1e-4,
        pseudo_positive_alpha: float = 0.1,
        distance: str = "csd",
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            init_negative_scale, init_shift, reduction=reduction, check_finite=check_finite
        )
        self.kl_beta = kl_beta
        self.pseudo_positive_alpha = pseudo_positive_alpha
        self.distance = distance

    def compute_loss(self, batch: GaussianPairBatch) -> DirectionalLosses:
        img, txt = batch.image, batch.text
        target = batch.match.to(batch.dtype) if batch.labels is None else batch.labels
        dist = distance_matrix(
            batch.name, img.mean, img.log_var, txt.mean, txt.log_var, self.distance, None,
            check=self.check_finite,
        )  # fmt: skip
        negative_scale, shift = self.affine()
        logits = -negative_scale * dist + shift
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        i2t, t2i = bce.mean(dim=1), bce.mean(dim=0)
        alpha, beta = self.pseudo_positive_alpha, self.kl_beta
        if alpha != 0:
            pp_i2t = pseudo_positive_match(logits, target)
            pp_t2i = pseudo_positive_match(logits.T, target.T)
            bce_i2t = F.binary_cross_entropy_with_logits(logits, pp_i2t, reduction="none")
            bce_t2i = F.binary_cross_entropy_with_logits(logits.T, pp_t2i, reduction="none")
            i2t = i2t + alpha * bce_i2t.mean(dim=1)
            t2i = t2i + alpha * bce_t2i.mean(dim=1)
        if beta != 0:
            i2t = i2t + beta * elementwise_kl(img).mean(-1)
            t2i = t2i + beta * elementwise_kl(txt).mean(-1)
        return DirectionalLosses(i2t, t2i)


_CSD = affine_twin(CSDLoss, "csd_loss")


def csd_loss(
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    match: Tensor | None = None,
    negative_scale: Tensor | float = 5.0,
    shift: Tensor | float = 5.0,
    kl_beta: float = 1e-4,
    pseudo_positive_alpha: float = 0.1,
    distance: str = "csd",
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`CSDLoss`; ``negative_scale`` and ``shift`` are ``a``, ``b``."""
    loss = _CSD(
        negative_scale, shift, kl_beta=kl_beta, pseudo_positive_alpha=pseudo_positive_alpha,
        distance=distance, reduction=reduction, check_finite=check_finite,
    )  # fmt: skip
    return loss.forward(image, text, pids, image_pids=image_pids, text_pids=text_pids, match=match)
