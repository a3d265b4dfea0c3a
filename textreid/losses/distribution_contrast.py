r"""UCA-style distribution contrast: contrastive learning over a distance between Gaussians.

UCA (Deng, Chen, Li, Tang, "Uncertainty-aware coarse-to-fine alignment for text-image person
retrieval", Visual Intelligence, 2025, doi:10.1007/s44267-025-00078-x) publishes no formulas
or code; :class:`DistributionContrastLoss` implements the objective its abstract names with
choices of ours, stated in its docstring.
"""

from __future__ import annotations

from torch import Tensor

from textreid._checks import Reduction
from textreid._gaussian_math import distance_matrix
from textreid._numerics import check_temperature
from textreid.heads.gaussian import GaussianEmbedding
from textreid.heads.gaussian_distances import GAUSSIAN_DISTANCES
from textreid.losses._common import DirectionalLosses, match_kl
from textreid.losses._gaussian import soft_target_ce
from textreid.losses.base import (
    GaussianPairBatch,
    GaussianPairLoss,
    Hyperparameter,
    functional_twin,
    one_of,
    optional_count,
    positive,
)

__all__ = ["DistributionContrastLoss", "distribution_contrast_loss"]


class DistributionContrastLoss(GaussianPairLoss):
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
        chunk_size: image rows per block for the distance (None: all at once); bounds
            memory, not values.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (:class:`DirectionalLosses`).
        check_finite: raise on NaN/inf inputs (and given samples) and on values that overflow
            (an extra host sync).

    Call arguments:
        image, text: :class:`GaussianEmbedding` ``[B_i, D]``, ``[B_t, D]``.
        pids / image_pids, text_pids: identities (default: instance labels).
        logit_scale: a multiplier replacing :math:`1/\tau` for this call.
        image_samples, text_samples, generator, match: refused (``TypeError``): the
            distance is in closed form and the positives come from the identities.

    Returns:
        A scalar, or :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`CSDLoss`, plus an unknown ``distance`` or
            ``objective``, a non-positive ``temperature``/``epsilon``/``logit_scale``, a
            ``chunk_size`` that is neither None nor an int >= 1.
    """

    uses_logit_scale = True
    distance = Hyperparameter(one_of(GAUSSIAN_DISTANCES))
    temperature = Hyperparameter(check_temperature)
    objective = Hyperparameter(one_of(("infonce", "sdm")))
    epsilon = Hyperparameter(positive)
    chunk_size = Hyperparameter(optional_count)

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
        super().__init__(reduction=reduction, check_finite=check_finite)
        self.distance = distance
        self.temperature = temperature
        self.objective = objective
        self.epsilon = epsilon
        self.chunk_size = chunk_size

    def default_logit_scale(self) -> float:
        return 1.0 / self.temperature

    def compute_loss(self, batch: GaussianPairBatch) -> DirectionalLosses:
        img, txt = batch.image, batch.text
        dist = distance_matrix(
            batch.name, img.mean, img.log_var, txt.mean, txt.log_var, self.distance,
            self.chunk_size, check=self.check_finite,
        )  # fmt: skip
        logits = -dist * batch.logit_scale
        match = batch.match
        if self.objective == "sdm":
            return match_kl(logits, match, "l1", self.epsilon)
        return DirectionalLosses(soft_target_ce(logits, match), soft_target_ce(logits.T, match.T))


_DC = functional_twin(DistributionContrastLoss, "distribution_contrast_loss")


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
    loss = _DC(
        distance=distance, temperature=temperature, objective=objective, epsilon=epsilon,
        chunk_size=chunk_size, reduction=reduction, check_finite=check_finite,
    )  # fmt: skip
    return loss.forward(
        image, text, pids, image_pids=image_pids, text_pids=text_pids, logit_scale=logit_scale
    )
