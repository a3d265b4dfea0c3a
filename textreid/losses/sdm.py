"""Similarity Distribution Matching (SDM), the global matching loss of IRRA."""

from __future__ import annotations

from torch import Tensor

from textreid._checks import Reduction
from textreid._numerics import check_temperature
from textreid.losses._common import DirectionalLosses, cosine_matrix, match_kl
from textreid.losses.base import Hyperparameter, PairBatch, PairLoss, functional_twin, positive

__all__ = ["SDMLoss", "sdm_loss"]


class SDMLoss(PairLoss):
    r"""Similarity Distribution Matching (Jiang & Ye, "Cross-Modal Implicit Relation Reasoning
    and Aligning for Text-to-Image Person Retrieval", CVPR 2023, arXiv:2303.12501).

    With cosine similarities :math:`s_{ij}` between image :math:`i` and caption :math:`j`,
    match labels :math:`y_{ij} = [\mathrm{pid}_i = \mathrm{pid}_j]` and scale :math:`1/\tau`:

    .. math::

        p_{ij} = \operatorname{softmax}_j(s_{ij}/\tau), \quad
        p'_{ji} = \operatorname{softmax}_i(s_{ij}/\tau), \quad
        q_{ij} = \frac{y_{ij}}{\sum_k y_{ik}}, \quad q'_{ji} = \frac{y_{ij}}{\sum_k y_{kj}}

        \mathcal{L}_{sdm} = \frac{1}{B_i}\sum_i \sum_j p_{ij}\bigl(\log p_{ij}
            - \log(q_{ij} + \epsilon)\bigr)
          + \frac{1}{B_t}\sum_j \sum_i p'_{ji}\bigl(\log p'_{ji} - \log(q'_{ji} + \epsilon)\bigr)

    i.e. :math:`\mathrm{KL}(p\,\|\,q)` per row, both directions summed, each averaged over its
    rows. A row with no match on the other side (possible only with ``image_pids`` /
    ``text_pids``) is compared with the :math:`\epsilon` floor.

    Args:
        temperature: :math:`\tau` (paper: 0.02, i.e. a fixed logit scale of 50).
        epsilon: added to :math:`q` inside the log (paper: 1e-8).
        reduction: ``"mean"`` (the paper's), ``"sum"`` (sums instead of the two row means) or
            ``"none"`` (a :class:`DirectionalLosses` of ``[B_i]`` and ``[B_t]`` row values).
        check_finite: check the features for NaN/inf: a ``ValueError`` on the CPU, a
            device-side assert on accelerators (:func:`textreid.eager_checks` gives the error).

    Call arguments:
        image_feats: ``[B_i, D]`` global image features (any float dtype; normalised inside).
        text_feats: ``[B_t, D]`` global text features.
        pids: ``[B]`` integer identities, one caption per image row. ``None``: instance labels
            (the i-th image matches only the i-th caption).
        image_pids, text_pids: ``[B_i]`` and ``[B_t]`` identities for unequal sides (several
            captions per image); give both instead of ``pids``.
        logit_scale: a multiplier replacing :math:`1/\tau` for this call, e.g. 50 or
            ``model.logit_scale.exp()`` (a 1-element tensor keeps its gradient).

    Returns:
        A scalar (``"mean"``/``"sum"``) or :class:`DirectionalLosses`. The loss is computed in
        float32 for float16/bfloat16/float32 inputs (float64 stays float64), so the result is
        float32 or float64.

    Raises:
        TypeError: features are not floating tensors, ids are not integer tensors, or
            ``logit_scale`` has the wrong type.
        ValueError: wrong rank, empty batch, zero width, mismatched widths, rows, devices,
            non-finite features, a non-positive ``epsilon``, a ``temperature`` or ``logit_scale``
            that is not finite and in ``[1e-4, 1e4]`` (a tensor ``logit_scale`` is checked with
            ``check_finite`` where checks are eager, and clamped into the range otherwise) or an
            unknown ``reduction``.

    Differences from the reference code:
        The reference builds the match labels in float32 whatever the feature dtype, so in
        float64 it differs from this exact computation by ~3e-7 on a loss of ~30. It normalises
        with ``x / x.norm()`` (NaN for a zero vector, zeros for float32 rows near ``1e19``,
        whose squares overflow); here rows are scaled before squaring and the norm is floored
        at 1e-6 (0.0039 for float16), which bounds the gradient of a zero row. It
        divides the label matrix by column sums, equal to row sums only for a symmetric label
        matrix; rows are normalised explicitly here, which also covers unequal sides.
    """

    uses_logit_scale = True
    temperature = Hyperparameter(check_temperature)
    epsilon = Hyperparameter(positive)

    def __init__(
        self,
        temperature: float = 0.02,
        epsilon: float = 1e-8,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__(reduction=reduction, check_finite=check_finite)
        self.temperature = temperature
        self.epsilon = epsilon

    def default_logit_scale(self) -> float:
        return 1.0 / self.temperature

    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        logits = cosine_matrix(batch.image_feats, batch.text_feats, batch.dtype) * batch.logit_scale
        return match_kl(logits, batch.match, "l1", self.epsilon)


_SDM = functional_twin(SDMLoss, "sdm_loss")


def sdm_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    logit_scale: float | Tensor | None = None,
    temperature: float = 0.02,
    epsilon: float = 1e-8,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`SDMLoss` (same arguments, same result)."""
    loss = _SDM(temperature, epsilon, reduction=reduction, check_finite=check_finite)
    return loss.forward(
        image_feats, text_feats, pids, image_pids=image_pids, text_pids=text_pids,
        logit_scale=logit_scale,
    )  # fmt: skip
