r"""Distances between diagonal Gaussians, without argument checks.

:mod:`textreid.heads.gaussian_distances` (the public, checked functions) and the losses on
Gaussian embeddings both compute with these kernels. The losses validate their inputs
themselves, name themselves in errors and follow their own ``check_finite`` switch, so they
cannot go through the public functions; keeping the formulas here gives both one copy.

Inputs are the means ``[B, D]`` and log-variances ``log σ²`` ``[B, D]`` of each side; the
formulas, the clamping of log-variances and the compute dtypes are documented in
:mod:`textreid.heads.gaussian_distances`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from textreid._checks import require
from textreid._numerics import compute_dtype, float32_region

__all__: list[str] = []

LOG_VAR_BOUND = 40.0
"""Log-variances are clamped to ``[-LOG_VAR_BOUND, LOG_VAR_BOUND]`` inside the distances."""

# Square root floor of PCME's sample distance ``sqrt(‖z − z'‖² + 1e-6)``: keeps the gradient
# finite when two samples coincide.
PCME_SQRT_EPS = 1e-6

Block = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``(mean_x, log_var_x, mean_y, log_var_y) -> [B_x, B_y]`` for a chunk of ``x`` rows."""


def refuse_overflow(fn: str, out: Tensor, what: str, check: bool) -> Tensor:
    """With ``check``, refuse a result that overflowed: the true value is beyond the dtype.

    A value check (:func:`textreid._checks.require`): eager on the CPU, a device-side assert
    on accelerators. ``what`` names the values in the message (``"distances"``,
    ``"loss values"``...). Returns ``out``.
    """
    if check and out.numel():
        over = (
            f"{fn}: the {what} overflow {out.dtype}: the embeddings (means, samples or "
            "variances) are too large for this computation; scale them down"
        )
        require(torch.isfinite(out).all(), lambda: over, over)
    return out


def _sq_euclid(a: Tensor, b: Tensor) -> Tensor:
    """``[N, M]`` squared distances by expansion, clamped at 0 against cancellation."""
    sq = a.pow(2).sum(-1)[:, None] + b.pow(2).sum(-1)[None, :] - 2.0 * (a @ b.T)
    return sq.clamp_min(0.0)


def _csd_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    return _sq_euclid(mx, my) + lx.exp().sum(-1)[:, None] + ly.exp().sum(-1)[None, :]


def _wasserstein_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    return _sq_euclid(mx, my) + _sq_euclid((0.5 * lx).exp(), (0.5 * ly).exp())


def _kl_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    lv_x, lv_y = lx[:, None, :], ly[None, :, :]
    diff = mx[:, None, :] - my[None, :, :]
    # exp of differences (not ratios of exps) keeps 1/σ_y² from overflowing at tiny variances
    terms = (lv_x - lv_y).exp() + diff.pow(2) * (-lv_y).exp() - 1.0 + lv_y - lv_x
    return 0.5 * terms.sum(-1)


def _reverse_kl_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    return _kl_block(my, ly, mx, lx).T


def _symmetric_kl_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    lv_x, lv_y = lx[:, None, :], ly[None, :, :]
    diff2 = (mx[:, None, :] - my[None, :, :]).pow(2)
    # the log-variance terms cancel; each ratio is an exp of a difference for stability
    terms = (lv_x - lv_y).exp() + (lv_y - lv_x).exp() - 2.0
    terms = terms + diff2 * ((-lv_x).exp() + (-lv_y).exp())
    return 0.5 * terms.sum(-1)


def _bhattacharyya_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    lv_x, lv_y = lx[:, None, :], ly[None, :, :]
    log_avg = torch.logaddexp(lv_x, lv_y) - math.log(2.0)
    diff2 = (mx[:, None, :] - my[None, :, :]).pow(2)
    terms = 0.125 * diff2 * (-log_avg).exp() + 0.5 * (log_avg - 0.5 * (lv_x + lv_y))
    return terms.sum(-1)


def _log_elk_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    log_s = torch.logaddexp(lx[:, None, :], ly[None, :, :])
    diff2 = (mx[:, None, :] - my[None, :, :]).pow(2)
    return -0.5 * (diff2 * (-log_s).exp() + log_s + math.log(2.0 * math.pi)).sum(-1)


def _elk_distance_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    return -_log_elk_block(mx, lx, my, ly)


#: One kernel per name of :data:`textreid.heads.GAUSSIAN_DISTANCES` (all distances: lower is
#: closer) plus ``"log_elk"``, the log expected likelihood itself (a similarity).
BLOCKS: dict[str, Block] = {
    "csd": _csd_block,
    "wasserstein": _wasserstein_block,
    "kl": _kl_block,
    "reverse_kl": _reverse_kl_block,
    "symmetric_kl": _symmetric_kl_block,
    "bhattacharyya": _bhattacharyya_block,
    "elk": _elk_distance_block,
    "log_elk": _log_elk_block,
}


def distance_matrix(
    fn: str,
    mean_x: Tensor,
    log_var_x: Tensor,
    mean_y: Tensor,
    log_var_y: Tensor,
    distance: str,
    chunk_size: int | None,
    *,
    check: bool,
) -> Tensor:
    """``[B_x, B_y]`` values of the kernel ``BLOCKS[distance]``, ``chunk_size`` rows of ``x``
    at a time, in the compute dtype with clamped log-variances; with ``check`` an overflowing
    result raises (:func:`refuse_overflow`, naming ``fn``)."""
    block = BLOCKS[distance]
    with float32_region(mean_x, log_var_x, mean_y, log_var_y) as (mx, lx, my, ly):
        lx = lx.clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND)
        ly = ly.clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND)
        n = mx.shape[0]
        step = n if chunk_size is None else chunk_size
        out = torch.cat(
            [block(mx[i : i + step], lx[i : i + step], my, ly) for i in range(0, n, step)], dim=0
        )
    return refuse_overflow(fn, out, "distances", check)


def sample_logits(
    xs: Tensor, ys: Tensor, negative_scale: Tensor | float, shift: Tensor | float
) -> Tensor:
    """PCME's per-sample-pair logits ``-a·sqrt(‖z_x^k − z_y^{k'}‖² + 10⁻⁶) + b``.

    ``xs [B_x, K, D]``, ``ys [B_y, K', D]`` -> ``[B_x, B_y, K·K']`` (index ``k·K' + k'``) in
    the compute dtype.
    """
    dtype = compute_dtype(xs, ys)
    (bx, k, d), (by, k2, _) = xs.shape, ys.shape
    with float32_region(xs, ys):
        sq = _sq_euclid(xs.reshape(bx * k, d).to(dtype), ys.reshape(by * k2, d).to(dtype))
        dist = (sq + PCME_SQRT_EPS).sqrt().reshape(bx, k, by, k2).permute(0, 2, 1, 3)
        return -negative_scale * dist.reshape(bx, by, k * k2) + shift
