"""Cross-Modal Projection Matching and Classification (CMPM, CMPC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import Reduction, check_positive, check_reduction
from textreid._numerics import l2_normalize
from textreid.losses._common import (
    DirectionalLosses,
    check_classifier,
    compute_dtype,
    kl_rows,
    pid_match,
    prepare_pair,
    reduce_directional,
)

__all__ = ["CMPCLoss", "CMPMLoss", "cmpc_loss", "cmpm_loss"]

_PAPER = (
    'Zhang & Lu, "Deep Cross-Modal Projection Learning for Image-Text Matching", ECCV 2018 '
    "(no arXiv version; doi:10.1007/978-3-030-01246-5_42)"
)


def _cmpm(
    fn: str,
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    epsilon: float,
    reduction: str,
    check_finite: bool,
) -> Tensor | DirectionalLosses:
    check_positive(epsilon, "epsilon", fn)
    check_reduction(reduction, fn)
    ip, tp = prepare_pair(
        fn, image_feats, text_feats, pids, image_pids, text_pids, finite=check_finite
    )
    dtype = compute_dtype(image_feats, text_feats)
    v, t = image_feats.to(dtype), text_feats.to(dtype)
    match = pid_match(ip, tp)
    # Each direction projects the raw anchor onto the normalised other side, so the two
    # logit matrices are not transposes of each other.
    i2t = kl_rows(v @ l2_normalize(text_feats, 1, dtype=dtype).t(), match, "l2", epsilon)
    t2i = kl_rows(t @ l2_normalize(image_feats, 1, dtype=dtype).t(), match.t(), "l2", epsilon)
    return reduce_directional(DirectionalLosses(i2t, t2i), reduction, fn)


def cmpm_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None = None,
    *,
    image_pids: Tensor | None = None,
    text_pids: Tensor | None = None,
    epsilon: float = 1e-8,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`CMPMLoss` (same arguments, same result)."""
    return _cmpm(
        "cmpm_loss", image_feats, text_feats, pids, image_pids, text_pids,
        epsilon, reduction, check_finite,
    )  # fmt: skip


class CMPMLoss(nn.Module):
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
    instance labels) or ``image_pids [B_i]`` + ``text_pids [B_t]``. There is no temperature and
    so no ``logit_scale``.

    Returns:
        A float32 (float64 for float64 inputs) scalar or :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`~textreid.losses.SDMLoss` (features, ids, devices,
            ``epsilon``, ``reduction``).

    Differences from the reference code:
        The reference divides the label matrix by column norms (equal to row norms only for a
        symmetric label matrix); rows are normalised explicitly here. The reference builds
        labels in float32 and divides by unclamped norms (NaN for zero vectors).
    """

    def __init__(
        self, epsilon: float = 1e-8, *, reduction: Reduction = "mean", check_finite: bool = True
    ) -> None:
        super().__init__()
        check_positive(epsilon, "epsilon", "CMPMLoss")
        check_reduction(reduction, "CMPMLoss")
        self.epsilon = epsilon
        self.reduction: Reduction = reduction
        self.check_finite = check_finite

    def forward(
        self,
        image_feats: Tensor,
        text_feats: Tensor,
        pids: Tensor | None = None,
        *,
        image_pids: Tensor | None = None,
        text_pids: Tensor | None = None,
    ) -> Tensor | DirectionalLosses:
        """Compute the loss; see the class docstring for shapes and dtypes."""
        return _cmpm(
            "CMPMLoss", image_feats, text_feats, pids, image_pids, text_pids,
            self.epsilon, self.reduction, self.check_finite,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, reduction={self.reduction!r}"


def _cmpc(
    fn: str,
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor,
    weight: Tensor,
    reduction: str,
    check_finite: bool,
) -> Tensor | DirectionalLosses:
    check_reduction(reduction, fn)
    ip, _ = prepare_pair(
        fn, image_feats, text_feats, pids, None, None, finite=check_finite, default_instance=False
    )
    dtype = compute_dtype(image_feats, text_feats, weight)
    check_classifier(fn, weight, image_feats, ip)
    v, t = image_feats.to(dtype), text_feats.to(dtype)
    v_dir = l2_normalize(image_feats, 1, dtype=dtype)
    t_dir = l2_normalize(text_feats, 1, dtype=dtype)
    v_on_t = (v * t_dir).sum(dim=1, keepdim=True) * t_dir
    t_on_v = (t * v_dir).sum(dim=1, keepdim=True) * v_dir
    w_dir = l2_normalize(weight, 1, dtype=dtype)
    i2t = F.cross_entropy(v_on_t @ w_dir.t(), ip, reduction="none")
    t2i = F.cross_entropy(t_on_v @ w_dir.t(), ip, reduction="none")
    return reduce_directional(DirectionalLosses(i2t, t2i), reduction, fn)


def cmpc_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor,
    *,
    weight: Tensor,
    reduction: Reduction = "mean",
    check_finite: bool = True,
) -> Tensor | DirectionalLosses:
    """Functional form of :class:`CMPCLoss`; ``weight`` is the ``[C, D]`` classifier."""
    return _cmpc("cmpc_loss", image_feats, text_feats, pids, weight, reduction, check_finite)


class CMPCLoss(nn.Module):
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

    Call arguments: ``image_feats [B, D]``, ``text_feats [B, D]`` (row ``i`` of both is a pair),
    ``pids [B]`` (required; unequal sides are not defined for a paired projection).

    Returns:
        A float32 (float64 when the inputs or weights are float64) scalar or
        :class:`DirectionalLosses`.

    Raises:
        TypeError, ValueError: as :class:`~textreid.losses.SDMLoss`, plus pids outside
            ``0..C-1`` and a width different from ``dim``.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        check_positive(num_classes, "num_classes", "CMPCLoss")
        check_positive(dim, "dim", "CMPCLoss")
        check_reduction(reduction, "CMPCLoss")
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.reduction: Reduction = reduction
        self.check_finite = check_finite

    def forward(
        self, image_feats: Tensor, text_feats: Tensor, pids: Tensor
    ) -> Tensor | DirectionalLosses:
        """Compute the loss; see the class docstring for shapes and dtypes."""
        return _cmpc(
            "CMPCLoss",
            image_feats,
            text_feats,
            pids,
            self.weight,
            self.reduction,
            self.check_finite,
        )

    def extra_repr(self) -> str:
        c, d = self.weight.shape
        return f"num_classes={c}, dim={d}, reduction={self.reduction!r}"
