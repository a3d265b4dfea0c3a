"""IVT's multi-level alignment (MLA): one CMPM over word-, phrase- and sentence-level texts.

The text levels themselves are drawn by :func:`textreid.text.phrase_level_text` and
:func:`textreid.text.word_level_text`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from textreid._checks import (
    Reduction,
    check_features,
    check_finite,
    check_ids,
    check_positive,
    check_reduction,
    check_same_device,
    check_same_width,
)
from textreid._deprecation import moved
from textreid.losses._common import DirectionalLosses
from textreid.losses.functional import cmpm_loss

__all__ = ["MultiLevelAlignmentLoss"]

__getattr__ = moved(
    __name__,
    {
        "phrase_level_text": "textreid.text.phrase_level_text",
        "word_level_text": "textreid.text.word_level_text",
    },
    since="0.1",
    removed_in="1.0",
)


class MultiLevelAlignmentLoss(nn.Module):
    """IVT's multi-level alignment: CMPM over views and text levels stacked into one batch.

    Shu et al., "See Finer, See More: Implicit Modality Alignment for Text-based Person
    Retrieval", ECCV 2022 Workshops, arXiv 2208.08608.

    With image views :math:`V^{(1..K)}` (IVT: three augmentations of each image) and texts
    :math:`T^{(1..K)}` (IVT: word, phrase, sentence level), all ``[B, D]``:

    .. math::
        \\mathcal{L}_{mla} = \\mathcal{L}_{cmpm}\\big([V^{(1)}; \\dots; V^{(K)}],\\,
        [T^{(1)}; \\dots; T^{(K)}],\\, [y; \\dots; y]\\big)

    so every same-identity pair across views and levels is a positive. No per-level weights.
    CMPM (:func:`textreid.losses.cmpm.cmpm_loss`, Zhang & Lu, ECCV 2018) projects the raw
    anchor on the normalised other side, L2-normalised label rows, :math:`\\epsilon = 10^{-8}`.

    Args:
        epsilon: CMPM's :math:`\\epsilon`.
        reduction: ``"mean"`` (the paper's: mean over the ``K B`` rows, both directions
            summed), ``"sum"`` or ``"none"`` (:class:`DirectionalLosses` of ``K B`` rows).
        check_finite: check features for NaN / inf.

    Shapes:
        image_views: K tensors ``[B, D]``; text_levels: K tensors ``[B, D]`` (row b of each is
        sample b); pids int ``[B]``.

    Raises:
        ValueError: the numbers of views and levels differ, shapes disagree, tensors on
            different devices, non-finite features.
        TypeError: non-tensor or non-floating features, non-integer ids.
    """

    def __init__(
        self, epsilon: float = 1e-8, *, reduction: Reduction = "mean", check_finite: bool = True
    ) -> None:
        super().__init__()
        check_positive(epsilon, "epsilon", type(self).__name__)
        check_reduction(reduction, type(self).__name__)
        self.epsilon = epsilon
        self.reduction = reduction
        self.check_finite = check_finite

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, reduction={self.reduction!r}"

    def forward(
        self, image_views: Sequence[Tensor], text_levels: Sequence[Tensor], pids: Tensor
    ) -> Tensor | DirectionalLosses:
        fn = type(self).__name__
        if len(image_views) != len(text_levels) or not image_views:
            raise ValueError(
                f"{fn}: image_views has {len(image_views)} views but text_levels has "
                f"{len(text_levels)} levels; give one (non-zero) number of each"
            )
        views = [
            check_features(v, f"image_views[{k}]", fn, finite=False)
            for k, v in enumerate(image_views)
        ]
        levels = [
            check_features(t, f"text_levels[{k}]", fn, finite=False)
            for k, t in enumerate(text_levels)
        ]
        first = views[0]
        for k, x in enumerate(views + levels):
            name = f"image_views[{k}]" if k < len(views) else f"text_levels[{k - len(views)}]"
            if x.shape[0] != first.shape[0]:
                raise ValueError(
                    f"{fn}: {name} has {x.shape[0]} rows but image_views[0] has {first.shape[0]}"
                )
            check_same_width(fn, first, "image_views[0]", x, name)
            check_same_device(fn, **{"image_views[0]": first, name: x})
        p = check_ids(pids, "pids", fn, first.shape[0], "image_views[0]")
        check_same_device(fn, **{"image_views[0]": first, "pids": p})
        if self.check_finite:
            for k, x in enumerate(views):
                check_finite(x, f"image_views[{k}]", fn)
            for k, x in enumerate(levels):
                check_finite(x, f"text_levels[{k}]", fn)
        v = torch.cat(views, dim=0)
        t = torch.cat(levels, dim=0)
        # Already checked above, under this loss's name and per view and level.
        return cmpm_loss(
            v, t, p.repeat(len(views)),
            epsilon=self.epsilon, reduction=self.reduction, check_finite=False,
        )  # fmt: skip
