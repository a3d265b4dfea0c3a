r"""Uncertainty-aware losses on Gaussian embeddings: PCME, PCME++ and the UCA-style contrasts.

Inputs are :class:`~textreid.heads.GaussianEmbedding` pairs (image first, text second) whose
``log_var`` is ``log σ²``. Losses that compare every image with every caption return, for
``reduction="none"``, a :class:`~textreid.losses.DirectionalLosses` of per-row values in which
per-item regularisers (KL) are added to their own row, so ``"sum"`` is the sum of all rows
and ``"mean"`` the mean over image rows plus the mean over caption rows.

UCA (Deng, Chen, Li, Tang, "Uncertainty-aware coarse-to-fine alignment for text-image person
retrieval", Visual Intelligence, 2025, doi:10.1007/s44267-025-00078-x) publishes no formulas
or code; :class:`DistributionContrastLoss` and :class:`PointContrastLoss` implement the two
objectives its abstract names with choices of ours, stated in each docstring.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import (
    Reduction,
    check_choice,
    check_finite,
    check_positive,
    check_reduction,
    check_same_device,
    check_same_width,
    check_tensor,
    resolve_pids,
)
from textreid._numerics import check_temperature, l2_normalize
from textreid.heads.gaussian import GaussianEmbedding
from textreid.heads.gaussian_distances import (
    GAUSSIAN_DISTANCES,
    GaussianDistance,
    _check_result,
    _distance_matrix,
    _sample_logits,
)
from textreid.losses._common import (
    DirectionalLosses,
    compute_dtype,
    match_kl,
    pid_match,
    reduce_directional,
    resolve_logit_scale,
)

__all__ = [
    "CSDLoss",
    "DistributionContrastLoss",
    "GaussianKLLoss",
    "PCMELoss",
    "PointContrastLoss",
    "csd_loss",
    "distribution_contrast_loss",
    "gaussian_kl_loss",
    "pcme_loss",
    "point_contrast_loss",
    "pseudo_positive_match",
]


def _prepare(
    fn: str,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    finite: bool,
) -> tuple[GaussianEmbedding, GaussianEmbedding, Tensor, Tensor]:
    for name, g in (("image", image), ("text", text)):
        if not isinstance(g, GaussianEmbedding):
            raise TypeError(f"{fn}: {name} must be a GaussianEmbedding, got {type(g).__name__}")
    for name, g in (("image", image), ("text", text)):
        if len(g) == 0:
            raise ValueError(f"{fn}: empty batch ({name} has 0 rows)")
    check_same_width(fn, image.mean, "image.mean", text.mean, "text.mean")
    check_same_device(fn, image=image.mean, text=text.mean)
    ip, tp = resolve_pids(fn, image.mean, text.mean, pids, image_pids, text_pids)
    if finite:
        for name, t in (
            ("image.mean", image.mean),
            ("image.log_var", image.log_var),
            ("text.mean", text.mean),
            ("text.log_var", text.log_var),
        ):
            check_finite(t, name, fn)
    dtype = compute_dtype(image.mean, text.mean)
    return image.to(dtype), text.to(dtype), ip, tp


def _elementwise_kl(g: GaussianEmbedding, mean: Tensor | None = None) -> Tensor:
    mu = g.mean if mean is None else mean
    return 0.5 * (mu.pow(2) + g.log_var.exp() - 1.0 - g.log_var)


def _checked(fn: str, out: Tensor | DirectionalLosses, finite: bool) -> Tensor | DirectionalLosses:
    """With ``finite``, refuse a loss that overflowed from finite inputs (a log-variance above
    ~88 has a variance beyond float32; means of ~1e19 have squared distances beyond it)."""
    for t in (out,) if isinstance(out, Tensor) else out:
        _check_result(fn, t, "loss values", finite)
    return out


# --------------------------------------------------------------------------------------------
# KL to the unit Gaussian


def gaussian_kl_loss(
    embedding: GaussianEmbedding, *, reduction: Reduction = "mean", check_finite: bool = True
) -> Tensor:
    """Functional form of :class:`GaussianKLLoss` (same arguments, same result)."""
    return _gaussian_kl("gaussian_kl_loss", embedding, reduction, check_finite)


def _gaussian_kl(fn: str, embedding: object, reduction: str, finite: bool) -> Tensor:
    check_reduction(reduction, fn)
    if not isinstance(embedding, GaussianEmbedding):
        raise TypeError(
            f"{fn}: embedding must be a GaussianEmbedding, got {type(embedding).__name__}"
        )
    if len(embedding) == 0:
        raise ValueError(f"{fn}: empty batch (embedding has 0 rows)")
    if finite:
        check_finite(embedding.mean, "embedding.mean", fn)
        check_finite(embedding.log_var, "embedding.log_var", fn)
    kl = _elementwise_kl(embedding.to(compute_dtype(embedding.mean)))
    out = kl if reduction == "none" else kl.mean() if reduction == "mean" else kl.sum()
    return _check_result(fn, out, "loss values", finite)


class GaussianKLLoss(nn.Module):
    r"""KL divergence of diagonal Gaussians to the unit Gaussian (the "VIB" term of PCME/PCME++).

    Chun, Oh, de Rezende, Kalantidis and Larlus, "Probabilistic Embeddings for Cross-Modal
    Retrieval", CVPR 2021, arXiv 2101.05068; Chun, "Improved Probabilistic Image-Text
    Representations", ICLR 2024, arXiv 2305.18171.

    .. math:: \mathrm{KL}\big(N(\mu, \sigma^2)\,\|\,N(0, I)\big)_{b,d}
       = \tfrac12\big(\mu_{b,d}^2 + \sigma_{b,d}^2 - 1 - \log\sigma_{b,d}^2\big)

    Args:
        reduction: ``"mean"`` over all ``B·D`` entries (PCME++'s reduction), ``"sum"`` over all
            entries (PCME's), ``"none"`` the ``[B, D]`` entries.
        check_finite: raise on NaN/inf inputs (and given samples) and on values that overflow
            (an extra host sync).

    Call arguments:
        embedding: a :class:`GaussianEmbedding` ``[B, D]`` (one modality; add the two calls).

    Returns:
        A scalar, or ``[B, D]`` for ``"none"``; float32 for half/float32 inputs.

    Raises:
        TypeError: ``embedding`` is not a :class:`GaussianEmbedding`.
        ValueError: empty batch, non-finite values, unknown ``reduction``.

    Differences from the reference code:
        PCME++ returns 0 (disconnecting the term) when the mean KL exceeds 1e4; this loss
        never skips.
    """

    def __init__(self, *, reduction: Reduction = "mean", check_finite: bool = True) -> None:
        super().__init__()
        check_reduction(reduction, "GaussianKLLoss")
        self.reduction: Reduction = reduction
        self.check_finite = check_finite

    def forward(self, embedding: GaussianEmbedding) -> Tensor:
        """Compute the loss; see the class docstring."""
        return _gaussian_kl("GaussianKLLoss", embedding, self.reduction, self.check_finite)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


# --------------------------------------------------------------------------------------------
# PCME


def _check_pcme_args(
    fn: str, num_samples: int, kl_beta: float, uniformity_lambda: float, uniformity_t: float
) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{fn}: num_samples must be an int >= 1, got {num_samples!r}")
    check_positive(kl_beta, "kl_beta", fn, allow_zero=True)
    check_positive(uniformity_lambda, "uniformity_lambda", fn, allow_zero=True)
    check_positive(uniformity_t, "uniformity_t", fn)


def _check_given_samples(
    fn: str, samples: object, g: GaussianEmbedding, name: str, finite: bool
) -> Tensor:
    s = check_tensor(samples, name, fn, ndim=3, kind="float", dims="(B, K, D)")
    if s.shape[0] != len(g) or s.shape[2] != g.dim:
        raise ValueError(
            f"{fn}: {name} has shape {tuple(s.shape)} but the embedding is ({len(g)}, {g.dim})"
        )
    check_same_device(fn, embedding=g.mean, **{name: s})
    if finite:
        check_finite(s, name, fn)
    return s


def _uniformity(points: Tensor, t: float) -> Tensor:
    """``log mean_{i<j} exp(-t ‖x_i − x_j‖²)`` (Wang & Isola, 2020), by log-sum-exp."""
    n = points.shape[0]
    if n < 2:
        return points.sum() * 0.0
    sq = (points[:, None, :] - points[None, :, :]).pow(2).sum(-1)
    iu = torch.triu_indices(n, n, offset=1, device=points.device)
    vals = -t * sq[iu[0], iu[1]]
    return torch.logsumexp(vals, dim=0) - math.log(vals.numel())


def _pcme(
    fn: str,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    image_samples: Tensor | None,
    text_samples: Tensor | None,
    generator: torch.Generator | None,
    negative_scale: Tensor | float,
    shift: Tensor | float,
    num_samples: int,
    kl_beta: float,
    uniformity_lambda: float,
    uniformity_t: float,
    kl_on_sample_mean: bool,
    reference_sampling: bool,
    reduction: str,
    finite: bool,
) -> Tensor | DirectionalLosses:
    check_reduction(reduction, fn)
    _check_pcme_args(fn, num_samples, kl_beta, uniformity_lambda, uniformity_t)
    if reduction == "none" and uniformity_lambda != 0:
        raise ValueError(
            f"{fn}: the uniformity term is a batch term; use reduction='mean' or 'sum' "
            "when uniformity_lambda != 0"
        )
    img, txt, ip, tp = _prepare(fn, image, text, pids, image_pids, text_pids, finite)

    def draw(g: GaussianEmbedding, given: Tensor | None, name: str) -> Tensor:
        if given is not None:
            return _check_given_samples(fn, given, g, name, finite).to(g.mean.dtype)
        # the reference encoder reads its log-variance as a log-std when sampling
        src = GaussianEmbedding(g.mean, 2.0 * g.log_var) if reference_sampling else g
        return src.sample(num_samples, generator)

    zs_v = draw(img, image_samples, "image_samples")
    zs_t = draw(txt, text_samples, "text_samples")
    logits = _check_result(fn, _sample_logits(zs_v, zs_t, negative_scale, shift), "logits", finite)
    sign = torch.where(pid_match(ip, tp), 1.0, -1.0).to(logits.dtype)[..., None]
    # -log mean_k sigmoid(2 m s) = log K - logsumexp_k(m s - logaddexp(s, -s))
    log_p = torch.logsumexp(sign * logits - torch.logaddexp(logits, -logits), dim=-1)
    nll = math.log(logits.shape[-1]) - log_p
    i2t, t2i = nll.sum(dim=1), nll.sum(dim=0)
    if kl_beta != 0:
        mean_v = zs_v.mean(dim=1) if kl_on_sample_mean else None
        mean_t = zs_t.mean(dim=1) if kl_on_sample_mean else None
        i2t = i2t + kl_beta * _elementwise_kl(img, mean_v).sum(-1)
        t2i = t2i + kl_beta * _elementwise_kl(txt, mean_t).sum(-1)
    out = reduce_directional(DirectionalLosses(i2t, t2i), reduction, fn)
    if uniformity_lambda != 0:
        assert isinstance(out, Tensor)
        pts = torch.cat([zs_v.reshape(-1, img.dim), zs_t.reshape(-1, txt.dim)])
        out = out + uniformity_lambda * _uniformity(pts, uniformity_t)
    return _checked(fn, out, finite)


def pcme_loss(
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    negative_scale: Tensor | float = 15.0,
    shift: Tensor | float = 15.0,
    image_samples: Tensor | None = None,
    text_samples: Tensor | None = None,
    generator: torch.Generator | None = None,
    num_samples: int = 7,
    kl_beta: float = 1e-5,
    uniformity_lambda: float = 0.0,
    uniformity_t: float = 2.0,
    kl_on_sample_mean: bool = False,
    reference_sampling: bool = False,
    reduction: Reduction = "sum",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`PCMELoss`; ``negative_scale`` and ``shift`` are ``a``, ``b``."""
    return _pcme(
        "pcme_loss", image, text, pids, image_pids, text_pids, image_samples, text_samples,
        generator, negative_scale, shift, num_samples, kl_beta, uniformity_lambda, uniformity_t,
        kl_on_sample_mean, reference_sampling, reduction, check_finite,
    )  # fmt: skip


class PCMELoss(nn.Module):
    r"""Probabilistic Cross-Modal Embedding loss (Chun, Oh, de Rezende, Kalantidis, Larlus,
    "Probabilistic Embeddings for Cross-Modal Retrieval", CVPR 2021, arXiv:2101.05068).

    With ``K`` samples per item, ``z ~ N(μ, σ²)``, the compressed sigmoid
    :math:`\tilde\sigma(t) = \operatorname{sigmoid}(2t)` (see
    :func:`~textreid.heads.match_probability`), learnable :math:`a` (``negative_scale``) and
    :math:`b` (``shift``), and :math:`m_{ij} = +1` when image :math:`i` and caption :math:`j`
    share an identity, :math:`-1` otherwise:

    .. math::

        \mathrm{NLL}_{ij} = -\log \frac{1}{K^2}\sum_{k,k'}
            \tilde\sigma\big(m_{ij}(-a\sqrt{\|z_i^k - z_j^{k'}\|^2 + 10^{-6}} + b)\big)

        \mathcal L = \sum_{i,j}\mathrm{NLL}_{ij} + \sum_{j,i}\mathrm{NLL}_{ij}
            + \beta\,[\mathrm{KL}_v + \mathrm{KL}_t] + \lambda\,\mathcal U

    The two sums are the image→text and text→image terms; they are equal (naver-ai/pcme
    issue #3) and both are kept as in the paper. :math:`\mathrm{KL}` is
    :class:`GaussianKLLoss` with sum reduction; :math:`\mathcal U = \log
    \operatorname{mean}_{p<q} e^{-t\|x_p - x_q\|^2}` is the uniformity of all samples of both
    modalities.

    Args:
        init_negative_scale: initial :math:`a` (paper, COCO: 15; CUB: 5).
        init_shift: initial :math:`b` (COCO: 15; CUB: 5).
        num_samples: :math:`K` when the loss draws the samples (paper: 7).
        kl_beta: :math:`\beta` (COCO: 1e-5; CUB: 1e-3).
        uniformity_lambda: :math:`\lambda` (COCO: 0; CUB: 10).
        uniformity_t: :math:`t` (2).
        kl_on_sample_mean: reference quirk: use the mean of the samples instead of
            :math:`\mu` in the KL term.
        reference_sampling: reference quirk: when the loss draws samples, use
            :math:`\exp(\text{log\_var})` as the standard deviation (the reference encoder
            reads its ``logsigma`` as a log-std when sampling and as a log-variance in the KL,
            pcmepp issue #4). Off: :math:`\sigma = \exp(\text{log\_var}/2)`.
        reduction: ``"sum"`` (the paper's, default: sums over all pairs and both directions),
            ``"mean"`` (mean over image rows plus mean over caption rows) or ``"none"``
            (:class:`DirectionalLosses`: row sums of NLL plus each item's weighted KL;
            refused when ``uniformity_lambda != 0``).
        check_finite: raise on NaN/inf inputs (and given samples) and on values that overflow
            (an extra host sync).

    Call arguments:
        image, text: :class:`GaussianEmbedding` ``[B_i, D]`` and ``[B_t, D]``.
        pids / image_pids, text_pids: identities (default: instance labels, i.e. the
            reference's diagonal matching).
        image_samples, text_samples: optional ``[B_i, K, D]``, ``[B_t, K', D]`` samples (e.g.
            drawn by the encoder, as in the reference); otherwise ``num_samples`` are drawn
            with ``generator``.

    Returns:
        A scalar, or :class:`DirectionalLosses` for ``"none"``.

    Raises:
        TypeError: inputs are not :class:`GaussianEmbedding` / float tensors, ids not integer.
        ValueError: empty batch, width/device/row mismatch, non-finite values, bad samples
            shape, ``num_samples < 1``, negative ``kl_beta``/``uniformity_lambda``, a
            non-positive ``uniformity_t``, unknown ``reduction``, ``"none"`` with uniformity.

    Differences from the reference code:
        Positives are identity-aware (the reference uses only the diagonal); the uniformity
        term uses all sample pairs (the reference subsamples 128 points with replacement,
        with numpy's RNG, when :math:`(2BK)^2 > 16384`); :math:`a, b` are 0-d parameters
        (shape ``[1]`` in the reference). With the quirk options on, and the same samples,
        values equal the reference's ``MCSoftContrastiveLoss``.
    """

    def __init__(
        self,
        init_negative_scale: float = 15.0,
        init_shift: float = 15.0,
        num_samples: int = 7,
        kl_beta: float = 1e-5,
        uniformity_lambda: float = 0.0,
        uniformity_t: float = 2.0,
        *,
        kl_on_sample_mean: bool = False,
        reference_sampling: bool = False,
        reduction: Reduction = "sum",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        fn = "PCMELoss"
        _check_pcme_args(fn, num_samples, kl_beta, uniformity_lambda, uniformity_t)
        check_reduction(reduction, fn)
        self.negative_scale = nn.Parameter(torch.tensor(float(init_negative_scale)))
        self.shift = nn.Parameter(torch.tensor(float(init_shift)))
        self.num_samples = num_samples
        self.kl_beta = kl_beta
        self.uniformity_lambda = uniformity_lambda
        self.uniformity_t = uniformity_t
        self.kl_on_sample_mean = kl_on_sample_mean
        self.reference_sampling = reference_sampling
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
        image_samples: Tensor | None = None,
        text_samples: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor | DirectionalLosses:
        """Compute the loss; see the class docstring."""
        return _pcme(
            "PCMELoss", image, text, pids, image_pids, text_pids, image_samples, text_samples,
            generator, self.negative_scale, self.shift, self.num_samples, self.kl_beta,
            self.uniformity_lambda, self.uniformity_t, self.kl_on_sample_mean,
            self.reference_sampling, self.reduction, self.check_finite,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, kl_beta={self.kl_beta}, "
            f"uniformity_lambda={self.uniformity_lambda}, reduction={self.reduction!r}"
        )


# --------------------------------------------------------------------------------------------
# PCME++


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


def _check_csd_args(fn: str, kl_beta: float, pseudo_positive_alpha: float, distance: str) -> None:
    check_positive(kl_beta, "kl_beta", fn, allow_zero=True)
    check_positive(pseudo_positive_alpha, "pseudo_positive_alpha", fn, allow_zero=True)
    check_choice(distance, "distance", fn, ("csd", "wasserstein"))


def _csd(
    fn: str,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
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
    _check_csd_args(fn, kl_beta, pseudo_positive_alpha, distance)
    img, txt, ip, tp = _prepare(fn, image, text, pids, image_pids, text_pids, finite)
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
    dist_name: GaussianDistance = "csd" if distance == "csd" else "wasserstein"
    dist = _distance_matrix(fn, img, txt, dist_name, None, check_finite=finite)
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
        i2t = i2t + kl_beta * _elementwise_kl(img).mean(-1)
        t2i = t2i + kl_beta * _elementwise_kl(txt).mean(-1)
    return _checked(fn, reduce_directional(DirectionalLosses(i2t, t2i), reduction, fn), finite)


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
        "csd_loss", image, text, pids, image_pids, text_pids, match, negative_scale, shift,
        kl_beta, pseudo_positive_alpha, distance, reduction, check_finite,
    )  # fmt: skip


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
        _check_csd_args("CSDLoss", kl_beta, pseudo_positive_alpha, distance)
        check_reduction(reduction, "CSDLoss")
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
            "CSDLoss", image, text, pids, image_pids, text_pids, match, self.negative_scale,
            self.shift, self.kl_beta, self.pseudo_positive_alpha, self.distance,
            self.reduction, self.check_finite,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"kl_beta={self.kl_beta}, pseudo_positive_alpha={self.pseudo_positive_alpha}, "
            f"distance={self.distance!r}, reduction={self.reduction!r}"
        )


# --------------------------------------------------------------------------------------------
# UCA-style distribution and point contrast


def _soft_target_ce(logits: Tensor, positives: Tensor, log_k: float = 0.0) -> Tensor:
    """Per row ``-mean_{p∈P} [log softmax(logits)_p + log_k]``; 0 for rows without positives."""
    log_p = F.log_softmax(logits, dim=-1) + log_k
    pos = positives.to(logits.dtype)
    count = pos.sum(dim=-1)
    return -(log_p * pos).sum(dim=-1) / count.clamp_min(1.0)


def _check_contrast_args(fn: str, temperature: float, epsilon: float, objective: str) -> None:
    check_temperature(temperature, "temperature", fn)
    check_positive(epsilon, "epsilon", fn)
    check_choice(objective, "objective", fn, ("infonce", "sdm"))


def _distribution_contrast(
    fn: str,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    logit_scale: float | Tensor | None,
    distance: str,
    temperature: float,
    objective: str,
    epsilon: float,
    chunk_size: int | None,
    reduction: str,
    finite: bool,
) -> Tensor | DirectionalLosses:
    check_reduction(reduction, fn)
    check_choice(distance, "distance", fn, GAUSSIAN_DISTANCES)
    _check_contrast_args(fn, temperature, epsilon, objective)
    img, txt, ip, tp = _prepare(fn, image, text, pids, image_pids, text_pids, finite)
    scale = resolve_logit_scale(fn, temperature, logit_scale, img.mean.device, finite=finite)
    dist_name: GaussianDistance = distance  # type: ignore[assignment]
    dist = _distance_matrix(fn, img, txt, dist_name, chunk_size, check_finite=finite)
    logits = -dist * scale
    match = pid_match(ip, tp)
    if objective == "sdm":
        rows = match_kl(logits, match, "l1", epsilon)
    else:
        rows = DirectionalLosses(_soft_target_ce(logits, match), _soft_target_ce(logits.T, match.T))
    return _checked(fn, reduce_directional(rows, reduction, fn), finite)


def distribution_contrast_loss(
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    logit_scale: float | Tensor | None = None,
    distance: str = "wasserstein",
    temperature: float = 0.04,
    objective: str = "infonce",
    epsilon: float = 1e-8,
    chunk_size: int | None = None,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`DistributionContrastLoss` (same arguments, same result)."""
    return _distribution_contrast(
        "distribution_contrast_loss", image, text, pids, image_pids, text_pids, logit_scale,
        distance, temperature, objective, epsilon, chunk_size, reduction, check_finite,
    )  # fmt: skip


class DistributionContrastLoss(nn.Module):
    r"""Distribution contrast: contrastive learning over a distance between Gaussians (the
    "distribution contrast learning" of UCA, Deng et al., Visual Intelligence 2025,
    doi:10.1007/s44267-025-00078-x; the formula is ours, the paper's is not public).

    With logits :math:`s_{ij} = -d(N_i^v, N_j^t)/\tau`, :math:`P_i` the captions sharing image
    :math:`i`'s identity and :math:`p = \operatorname{softmax}_j(s_{i\cdot})`:

    .. math::

        \text{infonce:}\quad \ell_i^{v\to t} = -\frac{1}{|P_i|}\sum_{j \in P_i} \log p_{ij},
        \qquad
        \text{sdm:}\quad \ell_i^{v\to t} = \mathrm{KL}\big(p_{i\cdot}\,\|\,M_{i\cdot}/|P_i|\big)

    and the same for caption rows over images; ``"mean"`` = mean over image rows plus mean
    over caption rows (rows without a positive contribute 0 for ``"infonce"``).

    Our choices and why: identity positives (TIPR has several images/captions per person);
    the default squared 2-Wasserstein distance is a true (squared) metric that reduces to the
    squared Euclidean distance of the means at zero variance, where
    :math:`-\|\mu_v - \mu_t\|^2/\tau = (2\cos - 2)/\tau`, so the default :math:`\tau = 0.04`
    gives the cosine logits of IRRA's :math:`\tau = 0.02` for unit-norm means.

    Args:
        distance: any of :data:`~textreid.heads.GAUSSIAN_DISTANCES` (``"kl"`` is
            KL(image ‖ text)).
        temperature: :math:`\tau` (ours: 0.04).
        objective: ``"infonce"`` (multi-positive cross-entropy) or ``"sdm"`` (IRRA's
            similarity distribution matching on these logits).
        epsilon: SDM's floor inside the log (1e-8).
        chunk_size: image rows per block for the distance.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (:class:`DirectionalLosses`).
        check_finite: raise on NaN/inf inputs (and given samples) and on values that overflow
            (an extra host sync).

    Call arguments:
        image, text: :class:`GaussianEmbedding` ``[B_i, D]``, ``[B_t, D]``.
        pids / image_pids, text_pids: identities (default: instance labels).
        logit_scale: a multiplier replacing :math:`1/\tau` for this call.

    Returns:
        A scalar, or :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`CSDLoss`, plus an unknown ``distance`` or
            ``objective``, a non-positive ``temperature``/``epsilon``/``logit_scale``.
    """

    def __init__(
        self,
        distance: str = "wasserstein",
        temperature: float = 0.04,
        objective: str = "infonce",
        epsilon: float = 1e-8,
        *,
        chunk_size: int | None = None,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        fn = "DistributionContrastLoss"
        check_choice(distance, "distance", fn, GAUSSIAN_DISTANCES)
        _check_contrast_args(fn, temperature, epsilon, objective)
        check_reduction(reduction, fn)
        self.distance = distance
        self.temperature = temperature
        self.objective = objective
        self.epsilon = epsilon
        self.chunk_size = chunk_size
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
    ) -> Tensor | DirectionalLosses:
        """Compute the loss; see the class docstring."""
        return _distribution_contrast(
            "DistributionContrastLoss", image, text, pids, image_pids, text_pids, logit_scale,
            self.distance, self.temperature, self.objective, self.epsilon, self.chunk_size,
            self.reduction, self.check_finite,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"distance={self.distance!r}, temperature={self.temperature}, "
            f"objective={self.objective!r}, reduction={self.reduction!r}"
        )


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
    return _soft_target_ce(logits, pos, math.log(k2)).reshape(b, k).mean(dim=1)


def _point_contrast(
    fn: str,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
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
    _check_point_args(fn, num_samples, temperature, intra_modal_weight)
    img, txt, ip, tp = _prepare(fn, image, text, pids, image_pids, text_pids, finite)
    scale = resolve_logit_scale(fn, temperature, logit_scale, img.mean.device, finite=finite)
    # the eps of the normalisation follows the caller's dtype, where the gradients land
    grad_dtype = image.mean.dtype

    def draw(g: GaussianEmbedding, given: Tensor | None, name: str) -> Tensor:
        s = (
            g.sample(num_samples, generator)
            if given is None
            else _check_given_samples(fn, given, g, name, finite).to(g.mean.dtype)
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
    return _checked(fn, reduce_directional(DirectionalLosses(i2t, t2i), reduction, fn), finite)


def _check_point_args(
    fn: str, num_samples: int, temperature: float, intra_modal_weight: float
) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{fn}: num_samples must be an int >= 1, got {num_samples!r}")
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
        "point_contrast_loss", image, text, pids, image_pids, text_pids, logit_scale,
        image_samples, text_samples, generator, num_samples, temperature, intra_modal_weight,
        reduction, check_finite,
    )  # fmt: skip


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
        _check_point_args("PointContrastLoss", num_samples, temperature, intra_modal_weight)
        check_reduction(reduction, "PointContrastLoss")
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
            "PointContrastLoss", image, text, pids, image_pids, text_pids, logit_scale,
            image_samples, text_samples, generator, self.num_samples, self.temperature,
            self.intra_modal_weight, self.reduction, self.check_finite,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, temperature={self.temperature}, "
            f"intra_modal_weight={self.intra_modal_weight}, reduction={self.reduction!r}"
        )
