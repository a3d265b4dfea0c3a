r"""PCME++: the closed-form sampled-distance loss with pseudo-positives (ICLR 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import (
    Reduction,
    check_choice,
    check_positive,
    check_reduction,
    check_same_device,
    check_tensor,
)
from textreid._gaussian_math import distance_matrix
from textreid.heads.gaussian import GaussianEmbedding
from textreid.losses._common import DirectionalLosses, pid_match, reduce_directional
from textreid.losses._gaussian import checked_loss, elementwise_kl, prepare_gaussian_pair

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


def _check_csd_args(
    fn: str, *, kl_beta: float, pseudo_positive_alpha: float, distance: str
) -> None:
    check_positive(kl_beta, "kl_beta", fn, allow_zero=True)
    check_positive(pseudo_positive_alpha, "pseudo_positive_alpha", fn, allow_zero=True)
    check_choice(distance, "distance", fn, ("csd", "wasserstein"))


def _csd(
    fn: str,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    *,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    match: Tensor | None,
    negative_scale: Tensor | float,
    shift: Tensor | float,
    kl_beta: float,
    pseudo_positive_alpha: float,
    distance: str,
    reduction: str,
    finite: bool,
) -> Tensor | DirectionalLosses:
    check_reduction(reduction, fn)
    _check_csd_args(
        fn, kl_beta=kl_beta, pseudo_positive_alpha=pseudo_positive_alpha, distance=distance
    )
    img, txt, ip, tp = prepare_gaussian_pair(
        fn, image, text, pids, image_pids, text_pids, finite=finite
    )
    if match is None:
        target = pid_match(ip, tp).to(img.mean.dtype)
    else:
        if pids is not None or image_pids is not None:
            raise ValueError(f"{fn}: pass either match or pids, not both")
        m = check_tensor(match, "match", fn, ndim=2, dims="(B_i, B_t)")
        if m.shape != (len(img), len(txt)):
            raise ValueError(
                f"{fn}: match has shape {tuple(m.shape)} but the batch is ({len(img)}, {len(txt)})"
            )
        check_same_device(fn, image=img.mean, match=m)
        target = m.to(img.mean.dtype)
    dist = distance_matrix(
        fn, img.mean, img.log_var, txt.mean, txt.log_var, distance, None, check=finite
    )
    logits = -negative_scale * dist + shift
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    i2t, t2i = bce.mean(dim=1), bce.mean(dim=0)
    if pseudo_positive_alpha != 0:
        pp_i2t = pseudo_positive_match(logits, target)
        pp_t2i = pseudo_positive_match(logits.T, target.T)
        bce_i2t = F.binary_cross_entropy_with_logits(logits, pp_i2t, reduction="none")
        bce_t2i = F.binary_cross_entropy_with_logits(logits.T, pp_t2i, reduction="none")
        i2t = i2t + pseudo_positive_alpha * bce_i2t.mean(dim=1)
        t2i = t2i + pseudo_positive_alpha * bce_t2i.mean(dim=1)
    if kl_beta != 0:
        i2t = i2t + kl_beta * elementwise_kl(img).mean(-1)
        t2i = t2i + kl_beta * elementwise_kl(txt).mean(-1)
    return checked_loss(fn, reduce_directional(DirectionalLosses(i2t, t2i), reduction, fn), finite)


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
    return _csd(
        "csd_loss",
        image,
        text,
        pids=pids,
        image_pids=image_pids,
        text_pids=text_pids,
        match=match,
        negative_scale=negative_scale,
        shift=shift,
        kl_beta=kl_beta,
        pseudo_positive_alpha=pseudo_positive_alpha,
        distance=distance,
        reduction=reduction,
        finite=check_finite,
    )


class CSDLoss(nn.Module):
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

    Returns:
        A scalar, or :class:`DirectionalLosses` for ``"none"``.

    Raises:
        TypeError: inputs of the wrong type.
        ValueError: empty batch, width/device/row mismatch, non-finite values, ``match`` with
            ``pids`` or of the wrong shape, negative ``kl_beta``/``pseudo_positive_alpha``,
            unknown ``distance`` or ``reduction``.

    Differences from the reference code:
        The reference skips the KL term (returns 0) when it exceeds 1e4; here it never skips.
        Labels default to identity matches instead of the diagonal.
    """

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
        super().__init__()
        fn = type(self).__name__
        _check_csd_args(
            fn, kl_beta=kl_beta, pseudo_positive_alpha=pseudo_positive_alpha, distance=distance
        )
        check_reduction(reduction, fn)
        self.negative_scale = nn.Parameter(torch.tensor(float(init_negative_scale)))
        self.shift = nn.Parameter(torch.tensor(float(init_shift)))
        self.kl_beta = kl_beta
        self.pseudo_positive_alpha = pseudo_positive_alpha
        self.distance = distance
        self.reduction: Reduction = reduction
        self.check_finite = check_finite

    def forward(
        self,
        image: GaussianEmbedding,
        text: GaussianEmbedding,
        pids: Tensor | None = None,
        *,
        image_pids: Tensor | None = None,
        text_pids: Tensor | None = None,
        match: Tensor | None = None,
    ) -> Tensor | DirectionalLosses:
        """Compute the loss; see the class docstring."""
        return _csd(
            type(self).__name__,
            image,
            text,
            pids=pids,
            image_pids=image_pids,
            text_pids=text_pids,
            match=match,
            negative_scale=self.negative_scale,
            shift=self.shift,
            kl_beta=self.kl_beta,
            pseudo_positive_alpha=self.pseudo_positive_alpha,
            distance=self.distance,
            reduction=self.reduction,
            finite=self.check_finite,
        )

    def extra_repr(self) -> str:
        return (
            f"kl_beta={self.kl_beta}, pseudo_positive_alpha={self.pseudo_positive_alpha}, "
            f"distance={self.distance!r}, reduction={self.reduction!r}"
        )
