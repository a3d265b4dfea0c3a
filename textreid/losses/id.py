"""Identity (instance) classification loss with a classifier shared by both modalities."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import Reduction, check_positive
from textreid.losses._common import DirectionalLosses, compute_dtype
from textreid.losses.base import ClassifierPairLoss, PairBatch, classifier_twin

__all__ = ["IDLoss", "id_loss"]


class IDLoss(ClassifierPairLoss):
    r"""Identity loss: one linear classifier over person identities shared by both modalities.

    Instance loss of Zheng et al., "Dual-Path Convolutional Image-Text Embeddings with Instance
    Loss", ACM TOMM 2020, arXiv:1711.05535, in the form used by IRRA (Jiang & Ye, CVPR 2023,
    arXiv:2303.12501):

    .. math::

        \mathcal{L}_{id} = \tfrac12\Bigl[\frac{1}{B_i}\sum_i \mathrm{CE}(W v_i + b,\ y_i)
            + \frac{1}{B_t}\sum_j \mathrm{CE}(W t_j + b,\ y_j)\Bigr]

    on the raw (un-normalised) features. The module **owns its parameters** (``classifier.weight
    [C, D]`` ~ N(0, 0.001²), ``classifier.bias [C]`` = 0, as IRRA): add ``loss.parameters()`` to
    the optimizer, and move the loss with the model (``loss.to(device)``).

    Args:
        num_classes: ``C``, number of training identities; ids must lie in ``0..C-1``.
        dim: ``D``, feature width.
        reduction: ``"mean"`` (the paper's), ``"sum"`` (½ of the two sums) or ``"none"``
            (:class:`DirectionalLosses` with the unhalved per-row cross-entropies).
        check_finite: raise on NaN/inf features.

    Call arguments: ``image_feats [B_i, D]``, ``text_feats [B_t, D]`` and the ids, required:
    ``pids [B]`` or ``image_pids [B_i]`` + ``text_pids [B_t]``. ``logit_scale`` cannot mean
    anything for a classifier (its logits ``W x + b`` have no temperature); it is refused.

    Returns:
        The loss in float32 (float64 when the features or the classifier are float64); the
        logits are computed in that dtype too.

    Raises:
        TypeError, ValueError: as :class:`~textreid.losses.SDMLoss`, plus missing ids, ids
            outside ``0..C-1``, a feature width different from ``dim``, a classifier on another
            device; ``TypeError`` for a ``logit_scale``.

    Differences from the reference code:
        IRRA runs the classifier in float16 (``classifier(v.half()).float()``); here it runs in
        float32 (or float64), which equals the reference's float32 form.
    """

    halve_mean = True

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
        self.classifier = nn.Linear(dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def classifier_weights(self) -> tuple[Tensor, Tensor | None]:
        return self.classifier.weight, self.classifier.bias

    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        weight, bias = self.classifier_weights()
        dtype = compute_dtype(batch.image_feats, batch.text_feats, weight)
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        img = F.cross_entropy(
            F.linear(batch.image_feats.to(dtype), w, b), batch.image_pids, reduction="none"
        )
        txt = F.cross_entropy(
            F.linear(batch.text_feats.to(dtype), w, b), batch.text_pids, reduction="none"
        )
        return DirectionalLosses(img, txt)


_ID = classifier_twin(IDLoss, "id_loss")


def id_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    logit_scale: float | Tensor | None = None,
    weight: Tensor,
    bias: Tensor | None = None,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`IDLoss`; ``weight [C, D]`` and ``bias [C]`` are the classifier."""
    loss = _ID(weight, bias, reduction=reduction, check_finite=check_finite)
    return loss.forward(
        image_feats, text_feats, pids, image_pids=image_pids, text_pids=text_pids,
        logit_scale=logit_scale,
    )  # fmt: skip
