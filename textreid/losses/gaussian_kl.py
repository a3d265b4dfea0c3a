r"""KL divergence of diagonal Gaussians to the unit Gaussian (the regulariser of PCME/PCME++)."""

from __future__ import annotations

from torch import Tensor

from textreid._checks import Reduction
from textreid._gaussian_math import refuse_overflow
from textreid.heads.gaussian import GaussianEmbedding
from textreid.losses._common import compute_dtype
from textreid.losses._gaussian import check_embeddings, check_finite_embeddings, elementwise_kl
from textreid.losses.base import _Loss, functional_twin

__all__ = ["GaussianKLLoss", "gaussian_kl_loss"]


class GaussianKLLoss(_Loss):
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

    def forward(self, embedding: GaussianEmbedding) -> Tensor:
        """Compute the loss; see the class docstring."""
        name = type(self).__name__
        check_embeddings(name, embedding=embedding)
        if self.check_finite:
            check_finite_embeddings(name, embedding=embedding)
        kl = elementwise_kl(embedding.to(compute_dtype(embedding.mean)))
        reduction = self.reduction
        out = kl if reduction == "none" else kl.mean() if reduction == "mean" else kl.sum()
        return refuse_overflow(name, out, "loss values", self.check_finite)


_KL = functional_twin(GaussianKLLoss, "gaussian_kl_loss")


def gaussian_kl_loss(
    embedding: GaussianEmbedding, *, reduction: Reduction = "mean", check_finite: bool = True
) -> Tensor:
    """Functional form of :class:`GaussianKLLoss` (same arguments, same result)."""
    return _KL(reduction=reduction, check_finite=check_finite).forward(embedding)
