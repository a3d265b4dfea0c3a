"""FMFA's explicit fine-grained alignment (EFA) loss on token sets."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from textreid import _token_math
from textreid._checks import (
    Reduction,
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_reduction,
    check_same_device,
    check_same_width,
    check_token_mask,
    check_tokens,
)
from textreid._numerics import check_temperature, l2_normalize
from textreid.heads.token_similarity import blockwise_pairs

__all__ = ["EFALoss"]


def _set_similarity(
    x: Tensor,
    c: Tensor,
    x_mask: Tensor | None,
    c_mask: Tensor | None,
    temperature: float,
    chunk_size: int | None,
) -> Tensor:
    """``s[i, j]`` = max-sim / log-sum-exp score of token set ``x_i`` against ``c_j``."""

    def block(rows: slice, cols: slice) -> Tensor:
        xm = None if x_mask is None else x_mask[rows, None]
        cm = None if c_mask is None else c_mask[None, cols]
        return _token_math.maxsim_logsumexp(x[rows, None], c[None, cols], xm, cm, temperature)

    recompute = torch.is_grad_enabled() and (x.requires_grad or c.requires_grad)
    return blockwise_pairs(block, x.shape[0], c.shape[0], chunk_size, recompute=recompute)


def _ranking_cost(s: Tensor, margin: float) -> Tensor:
    """Per-column cost ``[B]`` of FMFA's log-sum-exp ranking on a row-normalised ``s``."""
    s = l2_normalize(s, 1, dtype=s.dtype)
    eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    # s * 0 keeps a one-sample batch connected to the graph without adding gradient.
    zero = s * 0
    diag = s.diagonal()
    # The zeroed diagonal contributes exp(0) = 1, the "1 +" of the formula.
    anchor_c = torch.where(eye, zero, s - diag[None, :] + margin)
    anchor_x = torch.where(eye, zero, s - diag[:, None] + margin)
    return torch.logsumexp(anchor_c, dim=0) + torch.logsumexp(anchor_x, dim=0)


class EFALoss(nn.Module):
    """Explicit fine-grained alignment loss of FMFA.

    Yin et al., "Cross-modal Full-mode Fine-grained Alignment for Text-to-Image Person Retrieval"
    (FMFA), ACM TOMM, arXiv 2509.13754, 2025 (the loss as released in the authors' code).

    Each caption's tokens gather the image tokens they resemble (:func:`sparse_aggregate`:
    min-max normalised dot products, hard threshold :math:`1/N`, renormalised), giving
    :math:`A_b = W_b P_b`. Token sets are compared by max-sim / log-sum-exp
    (:func:`maxsim_logsumexp`):

    .. math::
        s_{ij}(X, C) = \\log\\sum_l \\exp\\big(\\max_m \\cos(X_{i,l}, C_{j,m}) / \\tau\\big),
        \\qquad \\bar s_{ij} = s_{ij} / \\lVert s_{i,:} \\rVert_2

    .. math::
        f(X, C, m) = \\frac{1}{B}\\sum_j \\Big[
        \\log\\big(1 + \\sum_{i \\ne j} e^{\\bar s_{ij} - \\bar s_{jj} + m}\\big) +
        \\log\\big(1 + \\sum_{i \\ne j} e^{\\bar s_{ij} - \\bar s_{ii} + m}\\big)\\Big]

    .. math::
        \\mathcal{L}_{EFA} = f(T, A, m_t) + f(P, A, m_p)

    Defaults are the authors' current release (HEAD): :math:`\\tau = 1`, :math:`m_t = 0.1`,
    :math:`m_p = 0.9`. Their first release (``fmfa_v1``) used :math:`\\tau = 0.1`,
    :math:`m_t = m_p = 0.1`.

    Args:
        temperature: :math:`\\tau` of the token pooling.
        margin_text: :math:`m_t`, margin of the text-vs-aggregated term.
        margin_patch: :math:`m_p`, margin of the patch-vs-aggregated term.
        threshold: hard threshold of the normalised rows; None = ``1 / N`` (N real image tokens).
        include_padding: True (FMFA) uses every text position, padding, start and end tokens
            included; ``text_mask`` must then be omitted. False: pass ``text_mask``.
        chunk_size: sample pairs are scored in ``chunk_size x chunk_size`` blocks, recomputed in
            backward, so memory stays flat in B (None = the unchunked ``[B, B, L, P]`` form).
        reduction: ``"mean"`` (the paper's), ``"sum"`` or ``"none"`` (``[B]``, one value per
            sample: both terms' costs of its column).
        check_finite: check the token features for NaN / inf.

    Shapes:
        image_tokens ``[B, P, D]`` (FMFA passes the patch tokens, class token dropped),
        text_tokens ``[B, L, D]``, image_mask bool ``[B, P]``, text_mask bool ``[B, L]``
        (True = real token). Image ``b`` and caption ``b`` are a pair.

    Raises:
        ValueError: batch sizes or widths differ, no tokens (``P`` or ``L`` is 0), a mask's
            shape does not match its tokens, tensors on different devices, ``text_mask`` with
            ``include_padding=True``, bad settings.
        TypeError: non-tensor inputs or non-bool masks.

    Differences from the reference code: the reference materialises ``[B, B, L, P]`` and
    divides by zero on a constant similarity row (NaN); here rows with max = min get uniform
    weights and memory is bounded by ``chunk_size``. The reference ignores its ``margin``
    argument and hard-codes 0.1 / 0.9; here both are arguments.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        margin_text: float = 0.1,
        margin_patch: float = 0.9,
        threshold: float | None = None,
        include_padding: bool = True,
        chunk_size: int | None = 16,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        check_temperature(temperature, "temperature", fn)
        if threshold is not None:
            check_positive(threshold, "threshold", fn, allow_zero=True)
        if chunk_size is not None:
            check_int(chunk_size, "chunk_size", fn, min_value=1)
        check_choice(include_padding, "include_padding", fn, (True, False))
        check_reduction(reduction, fn)
        self.temperature = temperature
        self.margin_text = margin_text
        self.margin_patch = margin_patch
        self.threshold = threshold
        self.include_padding = include_padding
        self.chunk_size = chunk_size
        self.reduction = reduction
        self.check_finite = check_finite

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, margin_text={self.margin_text}, "
            f"margin_patch={self.margin_patch}, threshold={self.threshold}, "
            f"include_padding={self.include_padding}, chunk_size={self.chunk_size}"
        )

    def forward(
        self,
        image_tokens: Tensor,
        text_tokens: Tensor,
        image_mask: Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> Tensor:
        fn = type(self).__name__
        img = check_tokens(image_tokens, "image_tokens", fn, dims="(B, P, D)", finite=False)
        txt = check_tokens(text_tokens, "text_tokens", fn, dims="(B, L, D)", finite=False)
        check_same_width(fn, img, "image_tokens", txt, "text_tokens")
        check_same_device(fn, image_tokens=img, text_tokens=txt)
        if self.check_finite:
            check_finite(img, "image_tokens", fn)
            check_finite(txt, "text_tokens", fn)
        if img.shape[0] != txt.shape[0]:
            raise ValueError(
                f"{fn}: image_tokens has {img.shape[0]} samples but text_tokens has "
                f"{txt.shape[0]}; EFA needs one caption per image"
            )
        if image_mask is not None:
            image_mask = check_token_mask(image_mask, "image_mask", fn, img, "image_tokens")
            img = torch.where(
                image_mask[..., None], img, torch.zeros((), dtype=img.dtype, device=img.device)
            )
        if text_mask is not None:
            if self.include_padding:
                raise ValueError(
                    f"{fn}: text_mask is given but include_padding=True uses every text "
                    "position; drop text_mask or set include_padding=False"
                )
            text_mask = check_token_mask(text_mask, "text_mask", fn, txt, "text_tokens")
            txt = torch.where(
                text_mask[..., None], txt, torch.zeros((), dtype=txt.dtype, device=txt.device)
            )

        agg = _token_math.sparse_aggregate(txt, img, image_mask, self.threshold)
        s_text = _set_similarity(txt, agg, text_mask, text_mask, self.temperature, self.chunk_size)
        s_patch = _set_similarity(
            img, agg, image_mask, text_mask, self.temperature, self.chunk_size
        )
        per_sample = _ranking_cost(s_text, self.margin_text) + _ranking_cost(
            s_patch, self.margin_patch
        )
        if self.reduction == "none":
            return per_sample
        return per_sample.mean() if self.reduction == "mean" else per_sample.sum()
