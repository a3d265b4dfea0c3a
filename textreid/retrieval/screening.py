"""Exact top-k through a bfloat16 screen: score every pair cheaply, rescore the few pairs
that a rigorous error bound cannot rule out.

Why: an exact search costs one ``[Nq, D] x [D, Ng]`` matmul; the selection after it is
cheap. CPUs with native bfloat16 dot products (AVX512-BF16, AMX) run that matmul in bfloat16
with float32 accumulation about 2.7x faster than torch's float32 matmul (D=512: 177 vs 64
GFLOP/s on one core of the AMD EPYC we measured on). bfloat16 scores are not exact, so they only *screen*;
every hit returned is rescored in the compute dtype and the result is the exact top-k of
those scores, ties to the lower gallery index as everywhere in :mod:`textreid.retrieval`.

Bound. For a query row ``q`` and gallery row ``g`` (the rows an exact search multiplies), let
``qh``, ``gh`` be their bfloat16 roundings, ``s~`` the bfloat16 matmul output and ``r`` the
rescored value. Then ``|r - s~| <= A + beta * |s~|`` with::

    A    = ||q - qh|| ||g|| + ||qh|| ||g - gh||          # rounding the inputs (Cauchy-Schwarz)
         + g32 ||qh|| ||gh|| + gc ||q|| ||g||           # float32 accumulation; rescoring
         + 2^-126 (sqrt(D) (||qh|| + ||gh||) + D)        # denormals flushed by BF16 dot units
    beta = 2^-7                                           # accumulator -> bfloat16 output

where ``gX = D u / (1 - D u)`` for the unit roundoff ``u`` of float32 (the matmul) or of the
compute dtype (rescoring), in any summation order. ``beta`` covers truncation as well as
round-to-nearest of the output. The query terms are measured per row; the gallery terms are
bounded a priori from the chunk's largest ``||g||``: ``||g - gh|| <= 2^-8 ||g|| + sqrt(D)
2^-126`` (round to nearest, subnormals flushed) and ``||gh|| <= ||g|| + ||g - gh||``. The
whole bound is widened by ``1 + 4 g`` for the rounding of the norms themselves. Features
whose norms reach ``2^100`` are not screened (the bfloat16 path could overflow).

Selection. Columns are grouped by :data:`GROUP`. The ``k``-th largest group maximum ``T``
is at most the chunk's ``k``-th largest ``s~``, so the chunk's ``k``-th largest exact score is
at least ``lower(T) = T - A - beta |T|``; so is the running ``k``-th exact score of earlier
chunks (``floor``). A pair can reach the final top-k (ties included) only if
``s~ + A + beta |s~| >= max(lower(T), floor)``, a threshold on ``s~`` itself because the
left side grows with ``s~``. For a positive threshold, comparing bfloat16 values is comparing
their bit patterns as int16 (negative values have negative patterns), so the group maxima
and the comparisons run on integers. Only groups whose maximum passes are opened; their
passing pairs are rescored with one sampled matmul. Rows whose threshold is not positive
(scores of the top-k near or below zero) are not screened; the caller scores them exactly.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from textreid.retrieval.topk import _order_by_score, _select_topk

__all__: list[str] = []

GROUP = 64
"""Columns per group of the screen (64 int16 maxima reduce in one vector pass)."""

_U = 2.0**-8  # unit roundoff of bfloat16: |x - bf16(x)| <= _U |x| for round-to-nearest
_BETA = 2.0**-7
_MIN_NORMAL = 2.0**-126
_MAX_NORM = 2.0**100  # larger rows (or products of norms) could overflow the bfloat16 path
_NO_INDEX = torch.iinfo(torch.int64).max  # pads candidate rows; sorts after every real index

DENSE_FRACTION = 0.125
"""When more than this fraction of a block's pairs pass the screen (features the bound cannot
separate, e.g. large offsets that cancel), the block is scored densely instead: rescoring a
pair on its own costs about 3x its share of a float32 matmul (measured, D=512)."""


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 dot products natively and torch reaches them
    through oneDNN (else a bfloat16 matmul is emulated and slower than float32, so screening
    would not pay).

    ``ATEN_CPU_CAPABILITY`` below AVX-512 (e.g. ``avx2``) answers ``False``, so that one
    machine can measure the paths a CPU without AVX-512 takes.
    """
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    native = bool(probe()) if callable(probe) else False
    capability = torch.backends.cpu.get_cpu_capability()
    return (
        native
        and capability.upper().startswith("AVX512")
        and bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]
    )


def _gamma(n: int, dtype: torch.dtype) -> float:
    u = torch.finfo(dtype).eps / 2
    return n * u / (1 - n * u)


def _norms(x: Tensor) -> Tensor:
    norms: Tensor = torch.linalg.vector_norm(x, dim=1)
    return norms


class ScreenQueries(NamedTuple):
    """One block of query rows prepared for screening.

    Attributes:
        rows: ``[B, D]`` rows in the compute dtype (normalised when the search normalises).
        low: their bfloat16 rounding.
        norm: ``||q||``; low_norm: ``||qh||``; err_norm: ``||q - qh||``, each ``[B]``.
    """

    rows: Tensor
    low: Tensor
    norm: Tensor
    low_norm: Tensor
    err_norm: Tensor


class ScreenChunk(NamedTuple):
    """One gallery chunk prepared for screening.

    Attributes:
        rows: ``[C, D]`` rows in the compute dtype.
        low: ``[ceil(C / GROUP) * GROUP, D]`` bfloat16 rounding, zero rows appended (their
            scores, +0, never pass a threshold, which is positive).
        norm: ``max ||g||`` over the chunk.
    """

    rows: Tensor
    low: Tensor
    norm: float


def screen_queries(rows: Tensor) -> ScreenQueries:
    """Round a block of query rows to bfloat16 and record the norms the bound needs."""
    low = rows.to(torch.bfloat16)
    back = low.to(rows.dtype)
    return ScreenQueries(rows, low, _norms(rows), _norms(back), _norms(rows - back))


def screen_chunk(rows: Tensor) -> ScreenChunk:
    """Round a gallery chunk to bfloat16 (padded to whole groups) and record its largest norm.

    The chunk's rounding error is bounded a priori rather than measured: measuring costs
    four passes over the chunk per query block, as much as the matmul itself for a few
    queries, and only halves the bound.
    """
    n = rows.shape[0]
    low = rows.new_empty(-(-n // GROUP) * GROUP, rows.shape[1], dtype=torch.bfloat16)
    low[:n] = rows
    low[n:] = 0
    return ScreenChunk(rows, low, float(_norms(rows).max()))


def _bound(queries: ScreenQueries, chunk: ScreenChunk) -> Tensor:
    """``A`` of the module docstring, per query row, for every pair with this chunk."""
    d = chunk.rows.shape[1]
    g32, gc = _gamma(d, torch.float32), _gamma(d, chunk.rows.dtype)
    flushed = math.sqrt(d) * _MIN_NORMAL  # subnormals flushed to zero by the conversion
    g_err = _U * chunk.norm + flushed
    g_low = chunk.norm + g_err
    a = (
        queries.err_norm * chunk.norm
        + queries.low_norm * g_err
        + g32 * queries.low_norm * g_low
        + gc * queries.norm * chunk.norm
        + _MIN_NORMAL * (math.sqrt(d) * (queries.low_norm + g_low) + d)
    )
    return a * (1 + 4 * max(g32, gc))


def _threshold_keys(lower: Tensor, a: Tensor) -> Tensor:
    """int16 pattern of the smallest bfloat16 ``t`` such that every ``s~ < t`` is ruled out
    (``s~ + a + beta |s~| < lower``); ``<= 0`` where that threshold is not positive."""
    need = lower - a
    x = torch.where(need >= 0, need / (1 + _BETA), need / (1 - _BETA))
    low = x.to(torch.bfloat16)
    keys = low.view(torch.int16).clone()
    keys -= (low.to(x.dtype) > x).to(torch.int16)  # rounded up: one step down the grid
    return keys.masked_fill_(~(x > 0), 0)


def screened_topk(
    queries: ScreenQueries, chunk: ScreenChunk, start: int, k: int, floor: Tensor | None
) -> tuple[tuple[Tensor, Tensor], Tensor] | None:
    """Top-``k`` of a query block against one gallery chunk through the bfloat16 screen.

    Args:
        queries: the prepared query block.
        chunk: the prepared gallery chunk, at least ``k`` groups wide.
        start: gallery index of the chunk's first row.
        k: hits per query.
        floor: ``[B]`` running ``k``-th best exact score of earlier chunks, or ``None``.

    Returns:
        ``((scores, indices), unscreened)``: ``[B, k]`` hits ordered by score then index
        (rows that cannot reach ``floor`` in this chunk are padded with ``-inf`` and an index
        past every real one), and the rows the caller must score exactly instead (their
        entries are padding). ``None`` when the features are too large for the bound or
        too few pairs are ruled out (see :data:`DENSE_FRACTION`); the caller then
        scores the block densely.
    """
    q_norm = float(queries.norm.max())
    if not (q_norm < _MAX_NORM and chunk.norm < _MAX_NORM and q_norm * chunk.norm < _MAX_NORM):
        return None
    n_rows = queries.rows.shape[0]
    a = _bound(queries, chunk)
    keys = (queries.low @ chunk.low.T).view(torch.int16).view(n_rows, -1, GROUP)
    maxima = keys.amax(2)
    kth = torch.topk(maxima, k, dim=1).values[:, -1]
    t = kth.view(torch.bfloat16).to(a.dtype)
    lower = torch.where(kth > 0, t - a - _BETA * t, float("-inf"))
    if floor is not None:
        lower = torch.maximum(lower, floor)
    thresh = _threshold_keys(lower, a)
    unscreened = (thresh <= 0).nonzero().squeeze(1)
    thresh.masked_fill_(thresh <= 0, torch.iinfo(torch.int16).max)  # opens no group

    hit_rows, hit_groups = (maxima >= thresh.unsqueeze(1)).nonzero(as_tuple=True)
    passes = keys[hit_rows, hit_groups] >= thresh[hit_rows].unsqueeze(1)
    which, offset = passes.nonzero(as_tuple=True)
    if which.numel() > DENSE_FRACTION * n_rows * chunk.rows.shape[0]:
        return None
    rows, cols = hit_rows[which], hit_groups[which] * GROUP + offset  # row-major, ascending

    counts = torch.bincount(rows, minlength=n_rows)
    width = max(k, int(counts.max()) if rows.numel() else 0)
    device, dtype = chunk.rows.device, chunk.rows.dtype
    scores = torch.full((n_rows, width), float("-inf"), dtype=dtype, device=device)
    index = torch.full((n_rows, width), _NO_INDEX, dtype=torch.int64, device=device)
    if rows.numel():
        crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=device)
        crow[1:] = counts.cumsum(0)
        slot = torch.arange(rows.numel(), device=device) - crow[rows]
        scores[rows, slot] = _pair_scores(queries.rows, chunk.rows, crow, cols)
        index[rows, slot] = cols + start
    pos = _select_topk(scores, k)
    return _order_by_score(scores.gather(1, pos), index.gather(1, pos)), unscreened


def _pair_scores(rows: Tensor, chunk: Tensor, crow: Tensor, cols: Tensor) -> Tensor:
    """``rows[i] . chunk[j]`` for the CSR pattern ``(crow, cols)``, without gathering rows."""
    with warnings.catch_warnings():
        # torch flags all of CSR support as beta; sampled_addmm is what we rely on here
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        pattern = torch.sparse_csr_tensor(
            crow,
            cols,
            torch.zeros(cols.shape[0], dtype=rows.dtype, device=rows.device),
            size=(rows.shape[0], chunk.shape[0]),
            check_invariants=False,
        )
        products: Tensor = torch.sparse.sampled_addmm(pattern, rows, chunk.T, beta=0.0)
    return products.values()
