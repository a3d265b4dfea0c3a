"""Commonality-based margin ranking over part embeddings (experimental, provisional design)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import (
    Reduction,
    check_choice,
    check_features,
    check_finite,
    check_ids,
    check_positive,
    check_reduction,
    check_same_device,
    check_same_width,
    check_tensor,
    resolve_pids,
)
from textreid._numerics import compute_dtype, float32_region, l2_normalize
from textreid.losses._common import DirectionalLosses, reduce_directional

__all__ = ["CommonalityMarginRankingLoss", "part_commonality"]


def part_commonality(
    image_parts: Tensor, text_parts: Tensor, image_pids: Tensor, text_pids: Tensor
) -> Tensor:
    """How common each part is across identities: ``[K]`` in ``[0, 1]``, detached.

    .. math:: c_k = \\big[\\operatorname{mean}_{(i, j):\\, y_i \\ne y_j}
        \\cos(v_{ik}, t_{jk})\\big]_0^1

    0 when the batch holds a single identity.

    Args:
        image_parts: ``[B_i, K, D]`` floating part embeddings of the images.
        text_parts: ``[B_t, K, D]`` floating part embeddings of the captions.
        image_pids: ``[B_i]`` identities of the images, any integer dtype.
        text_pids: ``[B_t]`` identities of the captions, any integer dtype.

    Returns:
        ``[K]`` in the compute dtype (float32, float64 when either side is float64).

    Raises:
        TypeError: non-tensor or non-floating parts, non-integer ids.
        ValueError: wrong ranks, empty inputs, different part counts or widths, id counts that
            differ from the rows, tensors on different devices, and (checked only for CPU
            tensors, as it costs a host sync elsewhere) NaN/inf parts.
    """
    fn = "part_commonality"
    v = check_features(image_parts, "image_parts", fn, ndim=3, dims="(B_i, K, D)", finite=False)
    t = check_features(text_parts, "text_parts", fn, ndim=3, dims="(B_t, K, D)", finite=False)
    check_same_width(fn, v, "image_parts", t, "text_parts")
    if v.shape[1] != t.shape[1]:
        raise ValueError(
            f"{fn}: image_parts has {v.shape[1]} parts but text_parts has {t.shape[1]}"
        )
    ip = check_ids(image_pids, "image_pids", fn, v.shape[0], "image_parts")
    tp = check_ids(text_pids, "text_pids", fn, t.shape[0], "text_parts")
    check_same_device(fn, image_parts=v, text_parts=t, image_pids=ip, text_pids=tp)
    if v.device.type == "cpu":
        check_finite(v, "image_parts", fn)
        check_finite(t, "text_parts", fn)
    return _part_commonality(v, t, ip, tp)


def _part_commonality(
    image_parts: Tensor, text_parts: Tensor, image_pids: Tensor, text_pids: Tensor
) -> Tensor:
    dtype = compute_dtype(image_parts, text_parts)
    with float32_region(image_parts, text_parts):
        s = torch.einsum(
            "ikd,jkd->kij",
            l2_normalize(image_parts.detach(), dtype=dtype),
            l2_normalize(text_parts.detach(), dtype=dtype),
        )
        neg = image_pids[:, None] != text_pids[None, :]
        n = neg.sum().clamp(min=1)
        return ((s * neg).sum(dim=(1, 2)) / n).clamp(0.0, 1.0)


class CommonalityMarginRankingLoss(nn.Module):
    """Per-part bidirectional margin ranking whose margin shrinks for common parts.

    After Park, Jeong, Kim and Kwak, "Improving Text-based Person Search via Part-level
    Cross-modal Correspondence", arXiv 2501.00318, 2024 (venue not confirmed).

    **Experimental.** The paper's formula could not be read; this is our provisional design
    from its abstract ("the degree of commonality of each body part" relaxes how hard similar
    parts of different people are pushed apart). For part k with cosine similarities
    :math:`s^k_{ij} = \\cos(v_{ik}, t_{jk})` and commonality :math:`c_k`
    (:func:`part_commonality`):

    .. math::
        m_k = \\operatorname{clamp}\\big(m_0 (1 - c_k),\\ m_{\\min},\\ m_0\\big)

    .. math::
        \\ell^{v}_{i,k} = \\operatorname{agg}_{j: y_j \\ne y_i}
        \\big[m_k - s^k_{ii} + s^k_{ij}\\big]_+, \\qquad
        \\ell^{t}_{i,k} = \\operatorname{agg}_{j: y_j \\ne y_i}
        \\big[m_k - s^k_{ii} + s^k_{ji}\\big]_+

    :math:`\\mathcal{L} = \\frac{1}{B}\\sum_i \\frac{1}{K}\\sum_k (\\ell^{v}_{i,k} + \\ell^{t}_{i,k})`,
    where agg is the max (``negatives="hardest"``) or the mean (``"all"``) over negatives.

    Choices the paper leaves open here, each ours: commonality as the mean cross-modal cosine
    of different-identity pairs in the batch, detached and clamped to [0, 1] (a caller may pass
    its own, e.g. a running average); the linear margin map and its clamp; the positive being
    the row-aligned pair; hinge (not soft-plus) form; hardest-negative default; equal part
    weights; both directions summed. Check every one against the paper before relying on it.

    Args:
        margin: :math:`m_0`, the margin of a part with zero commonality.
        min_margin: :math:`m_{\\min}`, the smallest margin.
        negatives: ``"hardest"`` or ``"all"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (:class:`DirectionalLosses`, ``[B]``
            each, averaged over parts).
        check_finite: check the features for NaN / inf.

    Shapes:
        image_parts ``[B, K, D]``, text_parts ``[B, K, D]`` (row-aligned pairs), pids ``[B]``,
        optional commonality ``[K]``.

    Features of any floating dtypes are compared in the common compute dtype (float32, or
    float64 when either side is float64), and so is the result.

    Raises:
        TypeError: non-tensor or non-floating parts or commonality, non-integer ids.
        ValueError: shapes disagree, tensors on different devices, non-finite features,
            ``min_margin > margin``, bad settings.
    """

    experimental = True

    def __init__(
        self,
        margin: float = 0.2,
        min_margin: float = 0.05,
        negatives: str = "hardest",
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        check_positive(margin, "margin", fn)
        check_positive(min_margin, "min_margin", fn, allow_zero=True)
        if min_margin > margin:
            raise ValueError(f"{fn}: min_margin {min_margin} exceeds margin {margin}")
        check_choice(negatives, "negatives", fn, ("hardest", "all"))
        check_reduction(reduction, fn)
        self.margin = margin
        self.min_margin = min_margin
        self.negatives = negatives
        self.reduction = reduction
        self.check_finite = check_finite

    def extra_repr(self) -> str:
        return f"margin={self.margin}, min_margin={self.min_margin}, negatives={self.negatives!r}"

    def margins(self, commonality: Tensor) -> Tensor:
        """Per-part margins ``[K]`` for commonality values ``[K]`` (non-increasing in them)."""
        return (self.margin * (1.0 - commonality)).clamp(self.min_margin, self.margin)

    def forward(
        self,
        image_parts: Tensor,
        text_parts: Tensor,
        pids: Tensor | None = None,
        *,
        image_pids: Tensor | None = None,
        text_pids: Tensor | None = None,
        commonality: Tensor | None = None,
    ) -> Tensor | DirectionalLosses:
        fn = type(self).__name__
        v = check_features(image_parts, "image_parts", fn, ndim=3, dims="(B, K, D)", finite=False)
        t = check_features(text_parts, "text_parts", fn, ndim=3, dims="(B, K, D)", finite=False)
        check_same_width(fn, v, "image_parts", t, "text_parts")
        if v.shape[:2] != t.shape[:2]:
            raise ValueError(
                f"{fn}: image_parts has shape {tuple(v.shape)} but text_parts has "
                f"{tuple(t.shape)}; pairs must be row-aligned with the same number of parts"
            )
        check_same_device(fn, image_parts=v, text_parts=t)
        ip, tp = resolve_pids(
            fn, v[:, 0], t[:, 0], pids, image_pids, text_pids,
            image_name="image_parts", text_name="text_parts",
        )  # fmt: skip
        if commonality is not None:
            check_tensor(commonality, "commonality", fn, ndim=1, kind="float", dims="(K,)")
            if commonality.shape[0] != v.shape[1]:
                raise ValueError(
                    f"{fn}: commonality has {commonality.shape[0]} entries but there are "
                    f"{v.shape[1]} parts"
                )
            check_same_device(fn, image_parts=v, commonality=commonality)
        if self.check_finite:
            check_finite(v, "image_parts", fn)
            check_finite(t, "text_parts", fn)
        if commonality is None:
            commonality = _part_commonality(v, t, ip, tp)
        dtype = compute_dtype(v, t)
        with float32_region(v, t):
            s = torch.einsum(
                "ikd,jkd->kij", l2_normalize(v, dtype=dtype), l2_normalize(t, dtype=dtype)
            )
            m = self.margins(commonality.to(dtype))[:, None, None]
            pos = s.diagonal(dim1=1, dim2=2)
            neg = (ip[:, None] != tp[None, :])[None]
            hinge_v = F.relu(m - pos[:, :, None] + s)
            hinge_t = F.relu(m - pos[:, None, :] + s)
            i2t = self._aggregate(hinge_v, neg, dim=2)
            t2i = self._aggregate(hinge_t, neg, dim=1)
        return reduce_directional(
            DirectionalLosses(i2t.mean(dim=0), t2i.mean(dim=0)), self.reduction, fn
        )

    def _aggregate(self, hinge: Tensor, neg: Tensor, dim: int) -> Tensor:
        # Multiplying by the mask (not indexing) keeps anchors without negatives at a
        # graph-connected zero.
        masked = hinge * neg
        if self.negatives == "hardest":
            return masked.amax(dim=dim)
        return masked.sum(dim=dim) / neg.sum(dim=dim).clamp(min=1)
