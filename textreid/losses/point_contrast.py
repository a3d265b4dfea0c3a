r"""UCA-style point contrast: inter- and intra-modal contrast over points sampled from Gaussians.

UCA (Deng, Chen, Li, Tang, "Uncertainty-aware coarse-to-fine alignment for text-image person
retrieval", Visual Intelligence, 2025, doi:10.1007/s44267-025-00078-x) publishes no formulas
or code; :class:`PointContrastLoss` implements the objective its abstract names with choices
of ours, stated in its docstring.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from textreid._checks import Reduction, check_positive, check_reduction
from textreid._numerics import check_temperature, l2_normalize
from textreid.heads.gaussian import GaussianEmbedding
from textreid.losses._common import (
    DirectionalLosses,
    pid_match,
    reduce_directional,
    resolve_logit_scale,
)
from textreid.losses._gaussian import (
    check_given_samples,
    check_num_samples,
    checked_loss,
    prepare_gaussian_pair,
    soft_target_ce,
)

__all__ = ["PointContrastLoss", "point_contrast_loss"]


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


def _point_contrast(
    fn: str,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    *,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    logit_scale: float | Tensor | None,
    image_samples: Tensor | None,
    text_samples: Tensor | None,
    generator: torch.Generator | None,
    num_samples: int,
    temperature: float,
    intra_modal_weight: float,
    reduction: str,
    finite: bool,
) -> Tensor | DirectionalLosses:
    check_reduction(reduction, fn)
    _check_point_args(
        fn,
        num_samples=num_samples,
        temperature=temperature,
        intra_modal_weight=intra_modal_weight,
    )
    img, txt, ip, tp = prepare_gaussian_pair(
        fn, image, text, pids, image_pids, text_pids, finite=finite
    )
    scale = resolve_logit_scale(fn, temperature, logit_scale, img.mean.device, finite=finite)
    # the eps of the normalisation follows the caller's dtype, where the gradients land
    grad_dtype = image.mean.dtype

    def draw(g: GaussianEmbedding, given: Tensor | None, name: str) -> Tensor:
        s = (
            g.sample(num_samples, generator)
            if given is None
            else check_given_samples(fn, given, g, name, finite).to(g.mean.dtype)
        )
        return l2_normalize(s, grad_dtype=grad_dtype)

    zv = draw(img, image_samples, "image_samples")
    zt = draw(txt, text_samples, "text_samples")
    match = pid_match(ip, tp)
    i2t = _point_rows(zv, zt, match, scale, exclude_self=False)
    t2i = _point_rows(zt, zv, match.T, scale, exclude_self=False)
    if intra_modal_weight != 0:
        i2t = i2t + intra_modal_weight * _point_rows(zv, zv, pid_match(ip, ip), scale, True)
        t2i = t2i + intra_modal_weight * _point_rows(zt, zt, pid_match(tp, tp), scale, True)
    return checked_loss(fn, reduce_directional(DirectionalLosses(i2t, t2i), reduction, fn), finite)


def _check_point_args(
    fn: str, *, num_samples: int, temperature: float, intra_modal_weight: float
) -> None:
    check_num_samples(fn, num_samples)
    check_temperature(temperature, "temperature", fn)
    check_positive(intra_modal_weight, "intra_modal_weight", fn, allow_zero=True)


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
    return _point_contrast(
        "point_contrast_loss",
        image,
        text,
        pids=pids,
        image_pids=image_pids,
        text_pids=text_pids,
        logit_scale=logit_scale,
        image_samples=image_samples,
        text_samples=text_samples,
        generator=generator,
        num_samples=num_samples,
        temperature=temperature,
        intra_modal_weight=intra_modal_weight,
        reduction=reduction,
        finite=check_finite,
    )


class PointContrastLoss(nn.Module):
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

    Returns:
        A scalar, or :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`CSDLoss`, plus ``num_samples < 1``, a bad samples
            shape, a non-positive ``temperature``, a negative ``intra_modal_weight``.
    """

    def __init__(
        self,
        num_samples: int = 7,
        temperature: float = 0.02,
        intra_modal_weight: float = 1.0,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        _check_point_args(
            fn,
            num_samples=num_samples,
            temperature=temperature,
            intra_modal_weight=intra_modal_weight,
        )
        check_reduction(reduction, fn)
        self.num_samples = num_samples
        self.temperature = temperature
        self.intra_modal_weight = intra_modal_weight
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
        logit_scale: float | Tensor | None = None,
        image_samples: Tensor | None = None,
        text_samples: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor | DirectionalLosses:
        """Compute the loss; see the class docstring."""
        return _point_contrast(
            type(self).__name__,
            image,
            text,
            pids=pids,
            image_pids=image_pids,
            text_pids=text_pids,
            logit_scale=logit_scale,
            image_samples=image_samples,
            text_samples=text_samples,
            generator=generator,
            num_samples=self.num_samples,
            temperature=self.temperature,
            intra_modal_weight=self.intra_modal_weight,
            reduction=self.reduction,
            finite=self.check_finite,
        )

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, temperature={self.temperature}, "
            f"intra_modal_weight={self.intra_modal_weight}, reduction={self.reduction!r}"
        )
