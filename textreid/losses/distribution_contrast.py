r"""UCA-style distribution contrast: contrastive learning over a distance between Gaussians.

UCA (Deng, Chen, Li, Tang, "Uncertainty-aware coarse-to-fine alignment for text-image person
retrieval", Visual Intelligence, 2025, doi:10.1007/s44267-025-00078-x) publishes no formulas
or code; :class:`DistributionContrastLoss` implements the objective its abstract names with
choices of ours, stated in its docstring.
"""

from __future__ import annotations

from torch import Tensor, nn

from textreid._checks import Reduction, check_choice, check_positive, check_reduction
from textreid._gaussian_math import distance_matrix
from textreid._numerics import check_temperature
from textreid.heads.gaussian import GaussianEmbedding
from textreid.heads.gaussian_distances import GAUSSIAN_DISTANCES
from textreid.losses._common import (
    DirectionalLosses,
    match_kl,
    pid_match,
    reduce_directional,
    resolve_logit_scale,
)
from textreid.losses._gaussian import checked_loss, prepare_gaussian_pair, soft_target_ce

__all__ = ["DistributionContrastLoss", "distribution_contrast_loss"]


def _check_contrast_args(
    fn: str, *, distance: str, temperature: float, objective: str, epsilon: float
) -> None:
    check_choice(distance, "distance", fn, GAUSSIAN_DISTANCES)
    check_temperature(temperature, "temperature", fn)
    check_positive(epsilon, "epsilon", fn)
    check_choice(objective, "objective", fn, ("infonce", "sdm"))


def _distribution_contrast(
    fn: str,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    *,
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
    _check_contrast_args(
        fn, distance=distance, temperature=temperature, objective=objective, epsilon=epsilon
    )
    img, txt, ip, tp = prepare_gaussian_pair(
        fn, image, text, pids, image_pids, text_pids, finite=finite
    )
    scale = resolve_logit_scale(fn, temperature, logit_scale, img.mean.device, finite=finite)
    dist = distance_matrix(
        fn, img.mean, img.log_var, txt.mean, txt.log_var, distance, chunk_size, check=finite
    )
    logits = -dist * scale
    match = pid_match(ip, tp)
    if objective == "sdm":
        rows = match_kl(logits, match, "l1", epsilon)
    else:
        rows = DirectionalLosses(soft_target_ce(logits, match), soft_target_ce(logits.T, match.T))
    return checked_loss(fn, reduce_directional(rows, reduction, fn), finite)


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
        "distribution_contrast_loss",
        image,
        text,
        pids=pids,
        image_pids=image_pids,
        text_pids=text_pids,
        logit_scale=logit_scale,
        distance=distance,
        temperature=temperature,
        objective=objective,
        epsilon=epsilon,
        chunk_size=chunk_size,
        reduction=reduction,
        finite=check_finite,
    )


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
        fn = type(self).__name__
        _check_contrast_args(
            fn, distance=distance, temperature=temperature, objective=objective, epsilon=epsilon
        )
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
            type(self).__name__,
            image,
            text,
            pids=pids,
            image_pids=image_pids,
            text_pids=text_pids,
            logit_scale=logit_scale,
            distance=self.distance,
            temperature=self.temperature,
            objective=self.objective,
            epsilon=self.epsilon,
            chunk_size=self.chunk_size,
            reduction=self.reduction,
            finite=self.check_finite,
        )

    def extra_repr(self) -> str:
        return (
            f"distance={self.distance!r}, temperature={self.temperature}, "
            f"objective={self.objective!r}, reduction={self.reduction!r}"
        )
