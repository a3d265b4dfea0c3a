"""Sparsified token-to-token similarity (FMFA's explicit fine-grained alignment as a score).

For an image ``i`` with tokens :math:`P_i \\in \\mathbb{R}^{P \\times D}` and a caption ``j`` with
tokens :math:`T_j \\in \\mathbb{R}^{L \\times D}`, every text token gathers the image tokens it
resembles (min-max normalised dot products, hard threshold, renormalised), and the caption is
then compared with what it gathered by max-sim / log-sum-exp pooling. The pair tensor
``[B_i, B_t, L, P]`` is never materialised: pairs are processed in ``chunk_size x chunk_size``
blocks, and under autograd each block is recomputed in backward (activation checkpointing), so
memory stays flat in the batch size while values and gradients equal the unchunked form.

Reference: Yin et al., "Cross-modal Full-mode Fine-grained Alignment for Text-to-Image Person Retrieval"
(FMFA), ACM TOMM, arXiv 2509.13754, 2025 (released code, EFA branch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from textreid import _token_math
from textreid._checks import (
    check_finite,
    check_int,
    check_positive,
    check_same_device,
    check_same_width,
    check_tensor,
    check_token_mask,
    check_tokens,
    require,
)
from textreid._numerics import check_temperature

__all__ = [
    "SparseTokenSimilarity",
    "blockwise_pairs",
    "maxsim_logsumexp",
    "sparse_aggregate",
]


def _check_token_pair(
    fn: str, a: object, a_name: str, b: object, b_name: str
) -> tuple[Tensor, Tensor]:
    """Two ``[..., N, D]`` token tensors of one width on one device (finite on the CPU)."""
    x = check_tokens(a, a_name, fn, dims="(..., N, D)", ndim=None, finite=False)
    y = check_tokens(b, b_name, fn, dims="(..., N, D)", ndim=None, finite=False)
    check_same_width(fn, x, a_name, y, b_name)
    check_same_device(fn, **{a_name: x, b_name: y})
    if x.device.type == "cpu":
        check_finite(x, a_name, fn)
        check_finite(y, b_name, fn)
    return x, y


def _check_mask(
    fn: str, mask: object, name: str, tokens: Tensor, tokens_name: str
) -> Tensor | None:
    """None, or a bool ``[..., N]`` mask for ``tokens [..., N, D]`` with a real token per row.

    The per-row check is a value check (:func:`textreid._checks.require`): eager on the CPU,
    a device-side assert on accelerators.
    """
    if mask is None:
        return None
    m = check_tensor(mask, name, fn, kind="bool", allow_empty=True)
    n = tokens.shape[-2]
    if m.dim() == 0 or m.shape[-1] != n:
        raise ValueError(
            f"{fn}: {name} has shape {tuple(m.shape)} but {tokens_name} has {n} tokens "
            f"(shape {tuple(tokens.shape)}); its last dimension must be {n}"
        )
    check_same_device(fn, **{tokens_name: tokens, name: m})
    if m.numel():
        empty_row = f"{fn}: every row of {name} needs at least one True (real) token"
        require(m.any(dim=-1).all(), lambda: empty_row, empty_row)
    return m


def _check_leading(fn: str, tokens: dict[str, Tensor], masks: dict[str, Tensor | None]) -> None:
    """The leading (batch-like) dimensions of tokens and masks broadcast together."""
    lead = {k: tuple(v.shape[:-2]) for k, v in tokens.items()}
    lead.update({k: tuple(v.shape[:-1]) for k, v in masks.items() if v is not None})
    try:
        torch.broadcast_shapes(*lead.values())  # type: ignore[no-untyped-call]
    except RuntimeError:
        listed = ", ".join(f"{k} {v}" for k, v in lead.items())
        raise ValueError(f"{fn}: the leading dimensions do not broadcast: {listed}") from None


def sparse_aggregate(
    text_tokens: Tensor,
    image_tokens: Tensor,
    image_mask: Tensor | None = None,
    threshold: float | None = None,
) -> Tensor:
    """Aggregate, for every text token, the image tokens it resembles (FMFA's sparse weights).

    With :math:`S = T P^\\top` (raw dot products, one row per text token),

    .. math::
        \\hat S_{lp} = \\frac{S_{lp} - \\min_{p'} S_{lp'}}{\\max_{p'} S_{lp'} - \\min_{p'} S_{lp'}},
        \\quad W_{lp} \\propto \\hat S_{lp}\\,[\\hat S_{lp} > \\theta],
        \\quad A = W P,

    with :math:`\\theta = 1/N` (``N`` real image tokens) unless ``threshold`` is given and the rows
    of ``W`` summing to one. Leading dimensions broadcast (``text_tokens [..., L, D]`` against
    ``image_tokens [..., P, D]``), so pairs can be formed by unsqueezing.

    Args:
        text_tokens: ``[..., L, D]``.
        image_tokens: ``[..., P, D]``.
        image_mask: bool ``[..., P]``, True = real token; padding never changes the result.
        threshold: the hard threshold on the normalised row; None = ``1 / N``.

    Returns:
        ``[..., L, D]`` aggregated image token per text token, in the compute dtype (float32 for
        half inputs).

    Raises:
        TypeError: non-tensor or non-floating tokens, a non-bool mask, a non-number threshold.
        ValueError: fewer than 2 dimensions, no tokens, widths or devices that differ, a mask
            whose last dimension is not ``P``, leading dimensions that do not broadcast, a
            negative threshold; for CPU tensors also NaN/inf tokens and a mask row without a
            real token (elsewhere these value checks would cost a host sync and are skipped:
            such a row aggregates to NaN).

    Differences from the reference code: a constant row (max = min) gets uniform weights
    instead of NaN, and the row maximum is always kept (the reference drops every entry, and
    returns NaN, when ``N = 1``).
    """
    fn = "sparse_aggregate"
    t, img = _check_token_pair(fn, text_tokens, "text_tokens", image_tokens, "image_tokens")
    if threshold is not None:
        check_positive(threshold, "threshold", fn, allow_zero=True)
    masks = {"image_mask": _check_mask(fn, image_mask, "image_mask", img, "image_tokens")}
    _check_leading(fn, {"text_tokens": t, "image_tokens": img}, masks)
    return _token_math.sparse_aggregate(t, img, masks["image_mask"], threshold)


def maxsim_logsumexp(
    x_tokens: Tensor,
    c_tokens: Tensor,
    x_mask: Tensor | None = None,
    c_mask: Tensor | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Max-sim then log-sum-exp pooling of two token sets (FMFA's token-set score).

    .. math::
        s(X, C) = \\log \\sum_{l} \\exp\\Big(\\tfrac{1}{\\tau}
        \\max_{m} \\frac{x_l \\cdot c_m}{\\lVert x_l\\rVert \\lVert c_m\\rVert}\\Big)

    over real tokens only. Leading dimensions broadcast (``[..., L_x, D]`` vs ``[..., L_c, D]``).

    Args:
        x_tokens: ``[..., L_x, D]``, the pooled side.
        c_tokens: ``[..., L_c, D]``, the side searched for each ``x`` token's best match.
        x_mask: bool ``[..., L_x]`` or None (all real).
        c_mask: bool ``[..., L_c]`` or None (all real).
        temperature: :math:`\\tau` (no rescaling of the result by :math:`\\tau`).

    Returns:
        ``[...]`` scores in the compute dtype (float32 for half inputs).

    Raises:
        TypeError: non-tensor or non-floating tokens, non-bool masks, a non-number temperature.
        ValueError: fewer than 2 dimensions, no tokens, widths or devices that differ, a mask
            whose last dimension is not its side's token count, leading dimensions that do not
            broadcast, a temperature outside ``[1e-4, 1e4]``; for CPU tensors also NaN/inf
            tokens and a mask row without a real token (elsewhere these value checks would
            cost a host sync and are skipped).
    """
    fn = "maxsim_logsumexp"
    x, c = _check_token_pair(fn, x_tokens, "x_tokens", c_tokens, "c_tokens")
    check_temperature(temperature, "temperature", fn)
    masks = {
        "x_mask": _check_mask(fn, x_mask, "x_mask", x, "x_tokens"),
        "c_mask": _check_mask(fn, c_mask, "c_mask", c, "c_tokens"),
    }
    _check_leading(fn, {"x_tokens": x, "c_tokens": c}, masks)
    return _token_math.maxsim_logsumexp(x, c, masks["x_mask"], masks["c_mask"], temperature)


def blockwise_pairs(
    fn: Callable[[slice, slice], Tensor],
    n_rows: int,
    n_cols: int,
    chunk_size: int | None,
    *,
    recompute: bool,
) -> Tensor:
    """Assemble an ``[n_rows, n_cols]`` matrix from ``fn(rows, cols)`` blocks.

    Args:
        fn: returns the ``[len(rows), len(cols)]`` block for two slices.
        n_rows: number of rows.
        n_cols: number of columns.
        chunk_size: block side; None = one block (the unchunked form).
        recompute: run each block under activation checkpointing (backward recomputes the
            block instead of storing its intermediates) so memory stays flat in the batch.
    """
    if chunk_size is None:
        return fn(slice(0, n_rows), slice(0, n_cols))
    rows = []
    for r0 in range(0, n_rows, chunk_size):
        cols = []
        for c0 in range(0, n_cols, chunk_size):
            rs, cs = (
                slice(r0, min(r0 + chunk_size, n_rows)),
                slice(c0, min(c0 + chunk_size, n_cols)),
            )
            if recompute:
                block = checkpoint(fn, rs, cs, use_reentrant=False)
                assert isinstance(block, Tensor)
            else:
                block = fn(rs, cs)
            cols.append(block)
        rows.append(torch.cat(cols, dim=1))
    return torch.cat(rows, dim=0)


class SparseTokenSimilarity(nn.Module):
    """Sparsified token-level image-text score ``[B_i, B_t]`` (FMFA's EFA as a retrieval head).

    For image ``i`` and caption ``j``: :math:`A_{ij} = \\mathrm{sparse\\_aggregate}(T_j, P_i)`
    (one aggregated image token per text token, see :func:`sparse_aggregate`), then
    :math:`s_{ij} = \\mathrm{maxsim\\_logsumexp}(T_j, A_{ij}; \\tau)` pooling over the real text
    tokens. Higher = more similar. No parameters.

    Args:
        temperature: :math:`\\tau` of the log-sum-exp pooling (FMFA HEAD 1.0; v1 0.1).
        threshold: the hard threshold of the normalised rows; None = ``1 / N`` with N the number
            of real image tokens.
        chunk_size: pairs are processed in ``chunk_size x chunk_size`` blocks (None = all at
            once, memory ``B_i * B_t * L * P``).
        include_padding: FMFA parity only. IRRA/FMFA score all 77 text positions, padding,
            start and end tokens included; with True every text position counts and
            ``text_mask`` must not be given. Default False: pass ``text_mask``.
        check_finite: check the inputs for NaN / inf.

    Shapes:
        image_tokens ``[B_i, P, D]``, text_tokens ``[B_t, L, D]``, image_mask bool
        ``[B_i, P]``, text_mask bool ``[B_t, L]`` (True = real token) -> ``[B_i, B_t]``.

    Raises:
        ValueError: widths differ, no tokens (``P`` or ``L`` is 0), a mask's shape does not
            match its tokens, a mask row has no real token, ``text_mask`` given with
            ``include_padding=True``, tensors on different devices, or bad settings.
        TypeError: non-tensor inputs, non-bool masks.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        threshold: float | None = None,
        chunk_size: int | None = 16,
        include_padding: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        check_temperature(temperature, "temperature", fn)
        if threshold is not None:
            check_positive(threshold, "threshold", fn, allow_zero=True)
        if chunk_size is not None:
            check_int(chunk_size, "chunk_size", fn, min_value=1)
        self.temperature = temperature
        self.threshold = threshold
        self.chunk_size = chunk_size
        self.include_padding = include_padding
        self.check_finite = check_finite

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, threshold={self.threshold}, "
            f"chunk_size={self.chunk_size}, include_padding={self.include_padding}"
        )

    def forward(
        self,
        image_tokens: Tensor,
        text_tokens: Tensor,
        image_mask: Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> Tensor:
        fn = type(self).__name__
        img = check_tokens(image_tokens, "image_tokens", fn, dims="(B_i, P, D)", finite=False)
        txt = check_tokens(text_tokens, "text_tokens", fn, dims="(B_t, L, D)", finite=False)
        check_same_width(fn, img, "image_tokens", txt, "text_tokens")
        check_same_device(fn, image_tokens=img, text_tokens=txt)
        if self.check_finite:
            check_finite(img, "image_tokens", fn)
            check_finite(txt, "text_tokens", fn)
        if image_mask is not None:
            image_mask = check_token_mask(image_mask, "image_mask", fn, img, "image_tokens")
        if text_mask is not None:
            if self.include_padding:
                raise ValueError(
                    f"{fn}: text_mask is given but include_padding=True scores every text "
                    "position; drop text_mask or set include_padding=False"
                )
            text_mask = check_token_mask(text_mask, "text_mask", fn, txt, "text_tokens")

        def block(rows: slice, cols: slice) -> Tensor:
            p = img[rows, None]
            t = txt[None, cols]
            pm = None if image_mask is None else image_mask[rows, None]
            tm = None if text_mask is None else text_mask[None, cols]
            return _token_math.sparse_token_score(p, t, pm, tm, self.threshold, self.temperature)

        recompute = torch.is_grad_enabled() and (img.requires_grad or txt.requires_grad)
        return blockwise_pairs(
            block, img.shape[0], txt.shape[0], self.chunk_size, recompute=recompute
        )
