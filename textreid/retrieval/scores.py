"""Chunked similarity scores: the one matmul every retrieval routine streams through.

Scores are computed block by block so that memory is bounded by ``query rows x chunk_size``,
never by the gallery size. Inputs in float16/bfloat16 are upcast chunk by chunk and
accumulated in float32; float64 inputs stay in float64. Slices of the inputs are views, so the
only allocations are one gallery chunk in the compute dtype and its score block.

BLAS libraries may round a dot product differently for different block shapes, so a score can
differ in its last bit between chunk sizes (or between CPU and GPU); rankings differ only
where two scores are that close.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from textreid._checks import check_features, check_positive, check_same_width
from textreid._numerics import compute_dtype, l2_norm

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_QUERY_BLOCK", "ScoreChunk", "cosine_scores"]

DEFAULT_CHUNK_SIZE = 8192
"""Gallery rows scored at once (a score block is ``query_block x chunk_size`` floats)."""

DEFAULT_QUERY_BLOCK = 1024
"""Query rows scored at once."""

_GEMM_COLS = 512
"""Where torch's BLAS computes a CPU score block, it runs as matmuls of at most this many
gallery rows: about 1.3x faster on such panels than one wide ``[1024, 3074]`` product
(measured with D=512, one thread), and the block's memory is unchanged."""


class ScoreChunk(NamedTuple):
    """Scores of every query against gallery rows ``start:start + scores.shape[1]``.

    Attributes:
        start: index of the first gallery row of the chunk.
        scores: ``[Nq, C]`` scores in the compute dtype (float32, or float64 for float64
            inputs); higher is more similar.
    """

    start: int
    scores: Tensor


def _row_norms(
    x: Tensor, dtype: torch.dtype, device: torch.device, chunk_size: int, fn: str, name: str
) -> Tensor:
    """L2 norms of the rows of ``x`` (chunked, so fp16 rows are never upcast all at once).

    Computed once per call, so every score uses the same divisor. The norms are scaled before
    squaring (:func:`~textreid._numerics.l2_norm`), so rows of ``1e19`` or ``1e-30`` in float32
    still normalise exactly; a zero row keeps norm ``tiny`` and scores 0 against everything.

    Raises:
        ValueError: a row's norm exceeds ``dtype`` (float32 rows near its largest value).
    """
    out = torch.empty(x.shape[0], dtype=dtype, device=device)
    for s in range(0, x.shape[0], chunk_size):
        rows = x[s : s + chunk_size].to(device=device, dtype=dtype)
        out[s : s + rows.shape[0]] = l2_norm(rows, dim=1).clamp_min(torch.finfo(dtype).tiny)
    if bool(torch.isinf(out).any()):
        raise ValueError(
            f"{fn}: {name} has rows whose L2 norm exceeds {dtype} (largest entry "
            f"{float(x.detach().abs().amax()):.3g}); cosine scores do not depend on the scale, "
            "so divide the features by a constant first"
        )
    return out


def _rows(
    x: Tensor, index: slice | Tensor, norms: Tensor | None, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Rows ``x[index]`` on ``device`` in ``dtype``, divided by their norms when given."""
    rows = x[index].to(device=device, dtype=dtype)
    if norms is None:
        return rows
    return rows / norms[index].unsqueeze(-1)


def _onednn_exact() -> bool:
    """Whether oneDNN's float32 matmul is reachable and computes in float32 (not the
    bfloat16/TF32 a user may allow through ``torch.backends.mkldnn``)."""
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    precision = getattr(matmul, "fp32_precision", "none")
    return precision in ("none", "ieee")


def _scores(query_rows: Tensor, chunk: Tensor) -> Tensor:
    """``query_rows @ chunk.T``; float32 on CPU through oneDNN when it computes in float32.

    oneDNN's float32 matmul ran 1.6-1.7x faster than the MKL sgemm behind ``torch.mm`` on an
    AMD EPYC (AVX-512 and AVX2 kernels alike: 32 vs 55 ms for ``[1024, 512] x [512, 3074]``,
    one thread), as fast as the OpenBLAS faiss ships; it is one call per block (fewer
    parallel regions to wait on when other processes share the cores). Both are float32
    with float32 accumulation; they may round differently in the last bit, as chunk sizes
    do. Anywhere else (GPU, float64, oneDNN missing), torch's BLAS in panels.
    """
    cpu = chunk.device.type == "cpu"
    float32 = chunk.dtype == torch.float32 and query_rows.dtype == torch.float32
    if cpu and float32 and _onednn_exact():
        try:
            out: Tensor = torch.ops.mkldnn._linear_pointwise(
                query_rows, chunk, None, "none", [], ""
            )
            return out
        except RuntimeError:  # a build whose oneDNN lacks the op's kernel
            pass
    if not cpu or chunk.shape[0] <= _GEMM_COLS:
        return query_rows @ chunk.T
    out = query_rows.new_empty(query_rows.shape[0], chunk.shape[0])
    for c0 in range(0, chunk.shape[0], _GEMM_COLS):
        torch.mm(query_rows, chunk[c0 : c0 + _GEMM_COLS].T, out=out[:, c0 : c0 + _GEMM_COLS])
    return out


def _score_chunks(
    query_rows: Tensor,
    gallery: Tensor,
    gallery_norms: Tensor | None,
    chunk_size: int,
) -> Iterator[ScoreChunk]:
    """Yield score blocks of prepared query rows against consecutive gallery chunks."""
    dtype, device = query_rows.dtype, query_rows.device
    for start in range(0, gallery.shape[0], chunk_size):
        chunk = _rows(gallery, slice(start, start + chunk_size), gallery_norms, dtype, device)
        yield ScoreChunk(start, _scores(query_rows, chunk))


def _pair_scores(
    query_rows: Tensor,
    gallery: Tensor,
    gallery_norms: Tensor | None,
    rows: Tensor,
    cols: Tensor,
    chunk_size: int,
) -> Tensor:
    """Scores of the pairs ``(query_rows[rows[m]], gallery[cols[m]])``, ``chunk_size`` at a time."""
    out = torch.empty(rows.shape[0], dtype=query_rows.dtype, device=query_rows.device)
    for s in range(0, rows.shape[0], chunk_size):
        g = _rows(gallery, cols[s : s + chunk_size], gallery_norms, out.dtype, out.device)
        out[s : s + g.shape[0]] = (query_rows[rows[s : s + chunk_size]] * g).sum(-1)
    return out


def cosine_scores(
    query: Tensor,
    gallery: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    normalize: bool = True,
    device: torch.device | str | None = None,
    check_finite: bool = True,
) -> Iterator[ScoreChunk]:
    """Stream the score matrix ``query @ gallery.T`` over gallery chunks.

    With ``normalize=True`` the rows are L2-normalised first (cosine similarity, as IRRA
    evaluates, with the norm computed so that it cannot overflow; a zero row scores 0); with ``normalize=False`` scores are plain inner
    products. Memory is one ``[Nq, chunk_size]`` score block plus one gallery chunk; split the
    queries yourself for very many queries.

    Args:
        query: ``[Nq, D]`` query features.
        gallery: ``[Ng, D]`` gallery features.
        chunk_size: gallery rows per block.
        normalize: L2-normalise rows (cosine) or not (inner product).
        device: where to compute; default the device of ``query``. Chunks of a gallery that
            lives elsewhere (e.g. CPU) are moved one at a time.
        check_finite: raise on NaN/inf features (one pass over the inputs).

    Yields:
        :class:`ScoreChunk` ``(start, scores[Nq, C])`` in gallery order, scores in float32
        (float64 when an input is float64).

    Raises:
        TypeError: non-tensor or non-floating inputs.
        ValueError: wrong ranks, widths, empty inputs, non-finite values, ``chunk_size < 1``.

    Example:
        >>> q, g = torch.randn(3, 8), torch.randn(10, 8)
        >>> torch.cat([c.scores for c in cosine_scores(q, g, chunk_size=4)], 1).shape
        torch.Size([3, 10])
    """
    fn = "cosine_scores"
    check_features(query, "query", fn, dims="(Nq, D)", finite=check_finite)
    check_features(gallery, "gallery", fn, dims="(Ng, D)", finite=check_finite)
    check_same_width(fn, query, "query", gallery, "gallery")
    check_positive(chunk_size, "chunk_size", fn)
    dev = torch.device(device) if device is not None else query.device
    dtype = compute_dtype(query, gallery)
    q_norms = _row_norms(query, dtype, dev, chunk_size, fn, "query") if normalize else None
    g_norms = _row_norms(gallery, dtype, dev, chunk_size, fn, "gallery") if normalize else None
    q_rows = _rows(query, slice(None), q_norms, dtype, dev)
    yield from _score_chunks(q_rows, gallery, g_norms, chunk_size)
