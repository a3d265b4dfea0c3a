"""Cross-Modal Projection Matching and Classification (CMPM, CMPC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import Reduction, check_positive
from textreid._numerics import l2_normalize
from textreid.losses._common import DirectionalLosses, compute_dtype, kl_rows
from textreid.losses.base import (
    ClassifierPairLoss,
    Hyperparameter,
    PairBatch,
    PairLoss,
    classifier_twin,
    functional_twin,
    positive,
)

__all__ = ["CMPCLoss", "CMPMLoss", "cmpc_loss", "cmpm_loss"]


class CMPMLoss(PairLoss):
    r"""Cross-Modal Projection Matching (Zhang & Lu, "Deep Cross-Modal Projection Learning for
    Image-Text Matching", ECCV 2018; no arXiv version), as used by IVT and IRRA.

    The raw (un-normalised) anchor is projected onto the normalised other modality, so the
    anchor's norm acts as a learned inverse temperature:

    .. math::

        p_{ij} = \operatorname{softmax}_j\Bigl(v_i^\top \frac{t_j}{\|t_j\|}\Bigr), \quad
        q_{ij} = \frac{y_{ij}}{\|y_{i\cdot}\|_2}, \quad
        \mathcal{L}_{i2t} = \frac{1}{B_i}\sum_i\sum_j p_{ij}\bigl(\log p_{ij}
            - \log(q_{ij}+\epsilon)\bigr)

    :math:`\mathcal{L}_{t2i}` is the same with :math:`t_j^\top v_i/\|v_i\|` and the rows of
    :math:`y^\top`; :math:`\mathcal{L}_{cmpm} = \mathcal{L}_{i2t} + \mathcal{L}_{t2i}`. Note the
    L2 (not L1) label normalisation of the paper.

    Args:
        epsilon: added to :math:`q` inside the log (1e-8).
        reduction: ``"mean"`` (the paper's), ``"sum"``, or ``"none"`` (:class:`DirectionalLosses`).
        check_finite: raise on NaN/inf features.

    Call arguments: ``image_feats [B_i, D]``, ``text_feats [B_t, D]``, ``pids [B]`` (``None``:
    instance labels) or ``image_pids [B_i]`` + ``text_pids [B_t]``. ``logit_scale`` cannot mean
    anything here: there is no temperature, the anchor's norm plays its role; it is refused.

    Returns:
        A float32 (float64 for float64 inputs) scalar or :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`~textreid.losses.SDMLoss` (features, ids, devices,
            ``epsilon``, ``reduction``); ``TypeError`` for a ``logit_scale``.

    Differences from the reference code:
        The reference divides the label matrix by column norms (equal to row norms only for a
        symmetric label matrix); rows are normalised explicitly here. The reference builds
        labels in float32 and divides by unclamped norms (NaN for zero vectors).
    """

    no_logit_scale_reason = (
        "CMPM has no temperature; the norm of the raw anchor features plays its role"
    )
    epsilon = Hyperparameter(positive)

    def __init__(
        self, epsilon: float = 1e-8, *, reduction: Reduction = "mean", check_finite: bool = True
    ) -> None:
        super().__init__(reduction=reduction, check_finite=check_finite)
        self.epsilon = epsilon

    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        image_feats, text_feats, dtype = batch.image_feats, batch.text_feats, batch.dtype
        v, t = image_feats.to(dtype), text_feats.to(dtype)
        match = batch.match
        # Each direction projects the raw anchor onto the normalised other side, so the two
        # logit matrices are not transposes of each other.
        i2t = kl_rows(v @ l2_normalize(text_feats, 1, dtype=dtype).t(), match, "l2", self.epsilon)
        t2i = kl_rows(
            t @ l2_normalize(image_feats, 1, dtype=dtype).t(), match.t(), "l2", self.epsilon
        )
        return DirectionalLosses(i2t, t2i)


_CMPM = functional_twin(CMPMLoss, "cmpm_loss")


def cmpm_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    logit_scale: float | Tensor | None = None,
    epsilon: float = 1e-8,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`CMPMLoss` (same arguments, same result)."""
    loss = _CMPM(epsilon, reduction=reduction, check_finite=check_finite)
    return loss.forward(
        image_feats, text_feats, pids, image_pids=image_pids, text_pids=text_pids,
        logit_scale=logit_scale,
    )  # fmt: skip


class CMPCLoss(ClassifierPairLoss):
    r"""Cross-Modal Projection Classification (Zhang & Lu, ECCV 2018; see :class:`CMPMLoss`).

    Each modality is projected onto the normalised *paired* sample of the other one and then
    classified by a shared, weight-normalised, bias-free softmax classifier ("norm-softmax"):

    .. math::

        \hat v_i = (v_i^\top \bar t_i)\,\bar t_i, \quad \hat t_i = (t_i^\top \bar v_i)\,\bar v_i,
        \quad \bar x = x/\|x\|, \quad \bar W_c = W_c/\|W_c\|

        \mathcal{L}_{cmpc} = -\frac{1}{B}\sum_i \log
            \frac{e^{\bar W_{y_i}^\top \hat v_i}}{\sum_c e^{\bar W_c^\top \hat v_i}}
          - \frac{1}{B}\sum_i \log
            \frac{e^{\bar W_{y_i}^\top \hat t_i}}{\sum_c e^{\bar W_c^\top \hat t_i}}

    The module owns its classifier ``weight [C, D]`` (Xavier-uniform init): add
    ``loss.parameters()`` to the optimizer.

    Args:
        num_classes: ``C``, number of training identities; ``pids`` must lie in ``0..C-1``.
        dim: ``D``, feature width.
        reduction: ``"mean"`` (the paper's), ``"sum"``, or ``"none"`` (:class:`DirectionalLosses`
            of two ``[B]`` vectors).
        check_finite: raise on NaN/inf features.

    Call arguments: ``image_feats [B, D]``, ``text_feats [B, D]`` (row ``i`` of both is a pair)
    and the ids, required: ``pids [B]``, or ``image_pids [B]`` + ``text_pids [B]`` to classify
    each side's projection as its own side's identity. Unequal sides cannot apply to a paired
    projection, nor ``logit_scale`` to a classifier without temperature: both are refused.

    Returns:
        A float32 (float64 when the inputs or weights are float64) scalar or
        :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`~textreid.losses.SDMLoss`, plus missing ids, ids
            outside ``0..C-1``, unequal sides, a width different from ``dim``; ``TypeError``
            for a ``logit_scale``.
    """

    no_logit_scale_reason = (
        "CMPC classifies projections with a norm-softmax classifier, which has no temperature"
    )

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__(reduction=reduction, check_finite=check_finite)
        check_positive(num_classes, "num_classes", type(self).__name__)
        check_positive(dim, "dim", type(self).__name__)
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)

    def classifier_weights(self) -> tuple[Tensor, Tensor | None]:
        return self.weight, None

    def check_batch(self, batch: PairBatch) -> None:
        b_i, b_t = batch.image_feats.shape[0], batch.text_feats.shape[0]
        if b_i != b_t:
            raise ValueError(
                f"{batch.name}: image_feats has {b_i} rows but text_feats has {b_t}; CMPC "
                "projects image i onto its paired caption i, so unequal sides cannot apply"
            )
        super().check_batch(batch)

    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        weight, _ = self.classifier_weights()
        image_feats, text_feats = batch.image_feats, batch.text_feats
        dtype = compute_dtype(image_feats, text_feats, weight)
        v, t = image_feats.to(dtype), text_feats.to(dtype)
        v_dir = l2_normalize(image_feats, 1, dtype=dtype)
        t_dir = l2_normalize(text_feats, 1, dtype=dtype)
        v_on_t = (v * t_dir).sum(dim=1, keepdim=True) * t_dir
        t_on_v = (t * v_dir).sum(dim=1, keepdim=True) * v_dir
        w_dir = l2_normalize(weight, 1, dtype=dtype)
        i2t = F.cross_entropy(v_on_t @ w_dir.t(), batch.image_pids, reduction="none")
        t2i = F.cross_entropy(t_on_v @ w_dir.t(), batch.text_pids, reduction="none")
        return DirectionalLosses(i2t, t2i)

    def extra_repr(self) -> str:
        c, d = self.classifier_weights()[0].shape
        return f"num_classes={c}, dim={d}, reduction={self.reduction!r}"


_CMPC = classifier_twin(CMPCLoss, "cmpc_loss")


def cmpc_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    logit_scale: float | Tensor | None = None,
    weight: Tensor,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`CMPCLoss`; ``weight`` is the ``[C, D]`` classifier."""
    loss = _CMPC(weight, reduction=reduction, check_finite=check_finite)
    return loss.forward(
        image_feats, text_feats, pids, image_pids=image_pids, text_pids=text_pids,
        logit_scale=logit_scale,
    )  # fmt: skip
