"""Token-set kernels of FMFA's fine-grained alignment, without argument checks.

The public, checked functions :func:`textreid.heads.sparse_aggregate` and
:func:`textreid.heads.maxsim_logsumexp` (which document the formulas) and FMFA's EFA loss both
compute with these kernels. The loss validates its inputs once per call, names itself in
errors and follows its own ``check_finite`` switch; the public functions would name
themselves, check the tokens for NaN/inf on the CPU whatever that switch says, and repeat
their checks for every block of pairs (and again in backward under activation
checkpointing). Keeping the formulas here gives both one copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from textreid._numerics import compute_dtype, float32_region, l2_normalize, pow2_scale

__all__: list[str] = []


def sparse_aggregate(
    text_tokens: Tensor,
    image_tokens: Tensor,
    image_mask: Tensor | None,
    threshold: float | None,
) -> Tensor:
    """:func:`textreid.heads.sparse_aggregate` without checks."""
    with float32_region(text_tokens, image_tokens):
        return _sparse_aggregate(text_tokens, image_tokens, image_mask, threshold)


def _sparse_aggregate(
    text_tokens: Tensor, image_tokens: Tensor, image_mask: Tensor | None, threshold: float | None
) -> Tensor:
    dt = compute_dtype(text_tokens)
    t = text_tokens.to(dt)
    img = image_tokens.to(dt)
    if image_mask is not None:
        img = torch.where(image_mask[..., None], img, torch.zeros((), dtype=dt, device=img.device))
        n_real = image_mask.sum(dim=-1, keepdim=True)[..., None].to(dt)
    else:
        n_real = torch.full((1,), float(img.shape[-2]), dtype=dt, device=img.device)
    # Ŝ is invariant to a positive scale per text token and per image token set, so scaling
    # both by powers of two first keeps large tokens (1e30) from overflowing the dot products
    s = (t / pow2_scale(t, -1)) @ (img / pow2_scale(img, (-2, -1))).transpose(-1, -2)
    finfo = torch.finfo(dt)
    if image_mask is not None:
        real = image_mask[..., None, :]
        lo = torch.where(real, s, torch.full((), finfo.max, dtype=dt, device=s.device))
        hi = torch.where(real, s, torch.full((), finfo.min, dtype=dt, device=s.device))
        s_min, s_max = lo.amin(dim=-1, keepdim=True), hi.amax(dim=-1, keepdim=True)
    else:
        real = None
        s_min, s_max = s.amin(dim=-1, keepdim=True), s.amax(dim=-1, keepdim=True)
    rng = s_max - s_min
    flat = rng <= 0
    s_hat = torch.where(flat, torch.ones_like(s), (s - s_min) / torch.where(flat, 1.0, rng))
    thr = (1.0 / n_real) if threshold is None else torch.full_like(n_real, threshold)
    keep = (s_hat > thr) | (s_hat >= 1.0)
    if real is not None:
        keep = keep & real
    w = torch.where(keep, s_hat, torch.zeros((), dtype=dt, device=s.device))
    w = w / w.sum(dim=-1, keepdim=True)
    return w @ img


def maxsim_logsumexp(
    x_tokens: Tensor,
    c_tokens: Tensor,
    x_mask: Tensor | None,
    c_mask: Tensor | None,
    temperature: float,
) -> Tensor:
    """:func:`textreid.heads.maxsim_logsumexp` without checks."""
    with float32_region(x_tokens, c_tokens):
        return _maxsim_logsumexp(x_tokens, c_tokens, x_mask, c_mask, temperature)


def _maxsim_logsumexp(
    x_tokens: Tensor,
    c_tokens: Tensor,
    x_mask: Tensor | None,
    c_mask: Tensor | None,
    temperature: float,
) -> Tensor:
    dt = compute_dtype(x_tokens)
    x = l2_normalize(x_tokens, dtype=dt)
    c = l2_normalize(c_tokens, dtype=dt)
    zero = torch.zeros((), dtype=dt, device=x.device)
    low = torch.full((), torch.finfo(dt).min, dtype=dt, device=x.device)
    if x_mask is not None:
        x = torch.where(x_mask[..., None], x, zero)
    if c_mask is not None:
        c = torch.where(c_mask[..., None], c, zero)
    sim = x @ c.transpose(-1, -2)
    if c_mask is not None:
        sim = torch.where(c_mask[..., None, :], sim, low)
    best = sim.amax(dim=-1) / temperature
    if x_mask is not None:
        best = torch.where(x_mask, best, low)
    return torch.logsumexp(best, dim=-1)


def sparse_token_score(
    image_tokens: Tensor,
    text_tokens: Tensor,
    image_mask: Tensor | None,
    text_mask: Tensor | None,
    threshold: float | None,
    temperature: float,
) -> Tensor:
    """:class:`textreid.heads.SparseTokenSimilarity`'s score of broadcast pairs, unchecked.

    ``image_tokens [..., P, D]`` against ``text_tokens [..., L, D]`` -> ``[...]``: the head
    forms its pairs by unsqueezing, token re-ranking passes row-aligned candidate pairs.
    """
    if text_mask is not None:
        # Zero padding rows so garbage there cannot reach the gradient (NaN * 0 = NaN).
        zero = torch.zeros((), dtype=text_tokens.dtype, device=text_tokens.device)
        text_tokens = torch.where(text_mask[..., None], text_tokens, zero)
    agg = sparse_aggregate(text_tokens, image_tokens, image_mask, threshold)
    return maxsim_logsumexp(text_tokens, agg, text_mask, text_mask, temperature)
