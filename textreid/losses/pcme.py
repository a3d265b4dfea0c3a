r"""PCME: Probabilistic Cross-Modal Embedding, the sampled match-probability loss (CVPR 2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from textreid._checks import Reduction
from textreid._gaussian_math import refuse_overflow, sample_logits
from textreid.heads.gaussian import GaussianEmbedding
from textreid.losses._common import DirectionalLosses
from textreid.losses._gaussian import elementwise_kl
from textreid.losses.base import (
    GaussianPairBatch,
    Hyperparameter,
    _AffineLogits,
    affine_twin,
    count,
    flag,
    non_negative,
    positive,
)

__all__ = ["PCMELoss", "pcme_loss"]


class PCMELoss(_AffineLogits):
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
        logit_scale, match: refused (``TypeError``): :math:`a` is a learned scale, not a
            temperature, and the sign :math:`m_{ij}` comes from the identities.

    Returns:
        A scalar, or :class:`DirectionalLosses` for ``"none"``.

    Raises:
        TypeError: inputs are not :class:`GaussianEmbedding` / float tensors, ids not integer,
            ``logit_scale`` or ``match`` given, a non-bool quirk flag.
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

    uses_samples = True
    num_samples = Hyperparameter(count)
    kl_beta = Hyperparameter(non_negative)
    uniformity_lambda = Hyperparameter(non_negative)
    uniformity_t = Hyperparameter(positive)
    kl_on_sample_mean = Hyperparameter(flag)
    reference_sampling = Hyperparameter(flag)

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
        super().__init__(
            init_negative_scale, init_shift, reduction=reduction, check_finite=check_finite
        )
        self.num_samples = num_samples
        self.kl_beta = kl_beta
        self.uniformity_lambda = uniformity_lambda
        self.uniformity_t = uniformity_t
        self.kl_on_sample_mean = kl_on_sample_mean
        self.reference_sampling = reference_sampling

    def sample(self, g: GaussianEmbedding, generator: torch.Generator | None) -> Tensor:
        # the reference encoder reads its log-variance as a log-std when sampling
        src = GaussianEmbedding(g.mean, 2.0 * g.log_var) if self.reference_sampling else g
        return src.sample(self.num_samples, generator)

    def check_batch(self, batch: GaussianPairBatch) -> None:
        if self.reduction == "none" and self.uniformity_lambda != 0:
            raise ValueError(
                f"{batch.name}: the uniformity term is a batch term; use reduction='mean' or "
                "'sum' when uniformity_lambda != 0"
            )

    def compute_loss(self, batch: GaussianPairBatch) -> DirectionalLosses:
        zs_v, zs_t = batch.samples
        logits = sample_logits(zs_v, zs_t, *self.affine())
        refuse_overflow(batch.name, logits, "logits", self.check_finite)
        sign = torch.where(batch.match, 1.0, -1.0).to(logits.dtype)[..., None]
        # -log mean_k sigmoid(2 m s) = log K - logsumexp_k(m s - logaddexp(s, -s))
        log_p = torch.logsumexp(sign * logits - torch.logaddexp(logits, -logits), dim=-1)
        nll = math.log(logits.shape[-1]) - log_p
        i2t, t2i = nll.sum(dim=1), nll.sum(dim=0)
        if self.kl_beta != 0:
            mean_v = zs_v.mean(dim=1) if self.kl_on_sample_mean else None
            mean_t = zs_t.mean(dim=1) if self.kl_on_sample_mean else None
            i2t = i2t + self.kl_beta * elementwise_kl(batch.image, mean_v).sum(-1)
            t2i = t2i + self.kl_beta * elementwise_kl(batch.text, mean_t).sum(-1)
        return DirectionalLosses(i2t, t2i)

    def batch_term(self, batch: GaussianPairBatch) -> Tensor | None:
        if self.uniformity_lambda == 0:
            return None
        zs_v, zs_t = batch.samples
        pts = torch.cat([zs_v.reshape(-1, batch.image.dim), zs_t.reshape(-1, batch.text.dim)])
        return self.uniformity_lambda * _uniformity(pts, self.uniformity_t)


def _uniformity(points: Tensor, t: float) -> Tensor:
    """``log mean_{i<j} exp(-t ‖x_i − x_j‖²)`` (Wang & Isola, 2020), by log-sum-exp."""
    n = points.shape[0]
    if n < 2:
        return points.sum() * 0.0
    sq = (points[:, None, :] - points[None, :, :]).pow(2).sum(-1)
    iu = torch.triu_indices(n, n, offset=1, device=points.device)
    vals = -t * sq[iu[0], iu[1]]
    return torch.logsumexp(vals, dim=0) - math.log(vals.numel())


_PCME = affine_twin(PCMELoss, "pcme_loss")


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
    loss = _PCME(
        negative_scale, shift, num_samples=num_samples, kl_beta=kl_beta,
        uniformity_lambda=uniformity_lambda, uniformity_t=uniformity_t,
        kl_on_sample_mean=kl_on_sample_mean, reference_sampling=reference_sampling,
        reduction=reduction, check_finite=check_finite,
    )  # fmt: skip
    return loss.forward(
        image, text, pids, image_pids=image_pids, text_pids=text_pids,
        image_samples=image_samples, text_samples=text_samples, generator=generator,
    )  # fmt: skip
