"""IVT's multi-level alignment (MLA): one CMPM over word-, phrase- and sentence-level texts."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

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
from textreid.losses._common import DirectionalLosses
from textreid.losses.functional import cmpm_loss

__all__ = ["MultiLevelAlignmentLoss", "phrase_level_text", "word_level_text"]


def _clauses(caption: str, strip_brackets: bool) -> list[str]:
    """IVT's clause splitter: per sentence, the longest comma chunk and the re-joined rest."""
    text = caption.strip(".")
    if strip_brackets:
        text = text.strip("[").strip("]")
    result: list[str] = []
    for sentence in text.split("."):
        chunks = sentence.split(",")
        longest = max(range(len(chunks)), key=lambda k: (len(chunks[k]), -k))
        rest = (",".join(chunks[:longest]) + "," + ",".join(chunks[longest + 1 :])).strip(",")
        result += [c for c in (chunks[longest], rest) if len(c) > 5]
    return [c.strip(" ") for c in result if len(c) > 0]


def phrase_level_text(caption: str, rng: random.Random) -> str:
    """A phrase-level text of a caption, as IVT's training loop draws it.

    The caption is stripped of ``.`` then ``[`` then ``]`` and split into sentences on ``.``;
    each sentence is split on ``,`` into its longest chunk (the first one on ties) and the
    re-joined rest; candidates of at most 5 characters are dropped, the rest stripped of
    spaces, and one is drawn with ``rng.sample(candidates, 1)``. IVT passes the lower-cased
    caption.

    Args:
        caption: the (lower-cased) caption.
        rng: Python random source; a ``random.Random`` in the same state as IVT's global
            ``random`` yields the same phrase.

    Returns:
        The phrase, or the caption itself when no candidate survives (without drawing).

    Differences from the reference code: the reference raises on a caption without any
    candidate longer than 5 characters.
    """
    candidates = _clauses(caption, strip_brackets=True)
    if not candidates:
        return caption
    return rng.sample(candidates, 1)[0]


def word_level_text(attributes: Mapping[str, str], caption: str, rng: random.Random) -> str:
    """A word-level text (attribute phrases) of a caption, as IVT's dataset draws it.

    With attributes (body part -> phrase): ``k = rng.randint(1, n)``, then ``rng.sample`` of
    ``k`` keys (in the mapping's order), their phrases joined with ``","``. Without: one clause
    of the caption drawn as in :func:`phrase_level_text` (the dataset's splitter, which strips
    only ``.``, not brackets). An empty result falls back to the caption.

    Args:
        attributes: phrase per body part, in the order the annotation file lists them.
        caption: the lower-cased caption (IVT lower-cases it in the dataset).
        rng: Python random source (see :func:`phrase_level_text`).

    Returns:
        The word-level text.

    Differences from the reference code: a caption without attributes and without any clause
    longer than 5 characters returns the caption (the reference raises).
    """
    if attributes:
        keys = list(attributes.keys())
        chosen = rng.sample(keys, rng.randint(1, len(keys)))
        text = ",".join(attributes[k] for k in chosen)
    else:
        candidates = _clauses(caption, strip_brackets=False)
        text = rng.sample(candidates, 1)[0] if candidates else caption
    return text if text else caption


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
