r"""Pairwise distances and similarities between diagonal Gaussians, and retrieval scores.

Every function takes :class:`~textreid.heads.gaussian.GaussianEmbedding` arguments, whose
``log_var`` is the log-variance ``log σ²`` (never the log-std; see
:mod:`textreid.heads.gaussian` for converting the reference codes' names), and returns a
``[B_x, B_y]`` matrix for all pairs. ``chunk_size`` bounds memory: rows of ``x`` are processed
``chunk_size`` at a time; the broadcasting distances (KL, Bhattacharyya, ELK) hold
``chunk_size × B_y × D`` values at once, the others ``chunk_size × B_y``. Chunked and
unchunked results agree up to the rounding of the matrix products.

With :math:`\Delta\mu = \mu_x - \mu_y` and :math:`\sigma^2 = e^{\text{log\_var}}`:

- closed-form sampled distance (PCME++): :math:`\|\Delta\mu\|^2 + \sum\sigma_x^2 + \sum\sigma_y^2
  = \mathbb E\|z_x - z_y\|^2`;
- squared 2-Wasserstein: :math:`\|\Delta\mu\|^2 + \|\sigma_x - \sigma_y\|^2`;
- KL: :math:`\tfrac12\sum_d[\sigma_x^2/\sigma_y^2 + \Delta\mu^2/\sigma_y^2 - 1 +
  \log\sigma_y^2 - \log\sigma_x^2]`;
- Bhattacharyya: :math:`\tfrac18\sum_d \Delta\mu^2/\bar\sigma^2 + \tfrac12\sum_d
  \log(\bar\sigma^2/\sigma_x\sigma_y)`, :math:`\bar\sigma^2 = (\sigma_x^2+\sigma_y^2)/2`;
- log expected likelihood kernel: :math:`\log\int N_x N_y = -\tfrac12\sum_d[\Delta\mu^2/s_d +
  \log s_d + \log 2\pi]`, :math:`s = \sigma_x^2 + \sigma_y^2` (a similarity).

Numerics: half-precision embeddings are computed in float32 (results are float32, float64 for
float64 inputs). Log-variances enter the distances clamped to ``[-40, 40]`` (:data:`LOG_VAR_BOUND`):
a variance ratio then stays below ``e^80 ≈ 5.5e34`` per dimension, so ``0 · e^{-log σ²}`` on a
diagonal can never become ``0 · inf = NaN`` and sums over thousands of dimensions stay finite
in float32; outside the bound the gradient with respect to ``log_var`` is zero. On CPU the
inputs are checked finite and a result that overflows (means around ``1e19`` and beyond in
float32) raises a ``ValueError``; elsewhere these checks would cost a host sync and are
skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from textreid._checks import (
    check_choice,
    check_finite,
    check_positive,
    check_same_device,
    check_same_width,
    check_tensor,
    require,
)
from textreid._numerics import compute_dtype
from textreid.heads.gaussian import GaussianEmbedding

__all__ = [
    "GAUSSIAN_DISTANCES",
    "GaussianDistance",
    "GaussianScores",
    "bhattacharyya_distance",
    "csd_distance",
    "gaussian_distance",
    "gaussian_scores",
    "kl_divergence",
    "log_expected_likelihood",
    "match_probability",
    "sample_match_logits",
    "symmetric_kl_divergence",
    "wasserstein2_distance",
]

GaussianDistance = Literal[
    "csd", "wasserstein", "kl", "reverse_kl", "symmetric_kl", "bhattacharyya", "elk"
]
GAUSSIAN_DISTANCES: tuple[GaussianDistance, ...] = (
    "csd",
    "wasserstein",
    "kl",
    "reverse_kl",
    "symmetric_kl",
    "bhattacharyya",
    "elk",
)
"""Names accepted by :func:`gaussian_distance` and :func:`gaussian_scores`."""

LOG_VAR_BOUND = 40.0
"""Log-variances are clamped to ``[-LOG_VAR_BOUND, LOG_VAR_BOUND]`` inside the distances."""

# Square root floor of PCME's sample distance ``sqrt(‖z − z'‖² + 1e-6)``: keeps the gradient
# finite when two samples coincide.
_PCME_SQRT_EPS = 1e-6


def _check_pair(
    fn: str, x: GaussianEmbedding, y: GaussianEmbedding, chunk_size: int | None
) -> None:
    for name, g in (("x", x), ("y", y)):
        if not isinstance(g, GaussianEmbedding):
            raise TypeError(f"{fn}: {name} must be a GaussianEmbedding, got {type(g).__name__}")
    if len(x) == 0 or len(y) == 0:
        raise ValueError(f"{fn}: empty batch (x has {len(x)} rows, y has {len(y)})")
    check_same_width(fn, x.mean, "x.mean", y.mean, "y.mean")
    check_same_device(fn, x=x.mean, y=y.mean)
    if x.mean.dtype != y.mean.dtype:
        raise ValueError(f"{fn}: x has dtype {x.mean.dtype} but y has dtype {y.mean.dtype}")
    _check_chunk(fn, chunk_size)


def _values(
    fn: str, x: GaussianEmbedding, y: GaussianEmbedding, check: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(mean_x, log_var_x, mean_y, log_var_y)`` in the compute dtype, log-variances clamped;
    with ``check`` the inputs are checked finite first."""
    if check:
        for name, t in (
            ("x.mean", x.mean),
            ("x.log_var", x.log_var),
            ("y.mean", y.mean),
            ("y.log_var", y.log_var),
        ):
            check_finite(t, name, fn)
    dt = compute_dtype(x.mean)
    return (
        x.mean.to(dt),
        x.log_var.to(dt).clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND),
        y.mean.to(dt),
        y.log_var.to(dt).clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND),
    )


def _check_result(fn: str, out: Tensor, what: str, check: bool) -> Tensor:
    """With ``check``, refuse a result that overflowed: the true value is beyond the dtype."""
    if check and out.numel():
        over = (
            f"{fn}: the {what} overflow {out.dtype}: the embeddings (means, samples or "
            "variances) are too large for this computation; scale them down"
        )
        require(torch.isfinite(out).all(), lambda: over, over)
    return out


def _check_chunk(fn: str, chunk_size: int | None) -> None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"{fn}: chunk_size must be None or an int >= 1, got {chunk_size!r}")


Block = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``(mean_x, log_var_x, mean_y, log_var_y) -> [B_x, B_y]`` for a chunk of ``x`` rows."""


def _chunked(
    x: GaussianEmbedding,
    y: GaussianEmbedding,
    chunk_size: int | None,
    block: Block,
    *,
    fn: str,
    check_inputs: bool,
    check_result: bool,
) -> Tensor:
    mx, lx, my, ly = _values(fn, x, y, check_inputs)
    n = mx.shape[0]
    step = n if chunk_size is None else chunk_size
    out = torch.cat(
        [block(mx[i : i + step], lx[i : i + step], my, ly) for i in range(0, n, step)], dim=0
    )
    return _check_result(fn, out, "distances", check_result)


def _pairwise(
    fn: str, x: GaussianEmbedding, y: GaussianEmbedding, chunk_size: int | None, block: Block
) -> Tensor:
    """A public distance: structure checked; on CPU also finite inputs and result."""
    _check_pair(fn, x, y, chunk_size)
    cpu = x.mean.device.type == "cpu"
    return _chunked(x, y, chunk_size, block, fn=fn, check_inputs=cpu, check_result=cpu)


def _sq_euclid(a: Tensor, b: Tensor) -> Tensor:
    """``[N, M]`` squared distances by expansion, clamped at 0 against cancellation."""
    sq = a.pow(2).sum(-1)[:, None] + b.pow(2).sum(-1)[None, :] - 2.0 * (a @ b.T)
    return sq.clamp_min(0.0)


def csd_distance(
    x: GaussianEmbedding, y: GaussianEmbedding, *, chunk_size: int | None = None
) -> Tensor:
    r"""Closed-form sampled distance (Chun, ICLR 2024, PCME++, arXiv 2305.15583).

    .. math:: d(x, y) = \|\mu_x - \mu_y\|_2^2 + \textstyle\sum_d \sigma_{x,d}^2
       + \sum_d \sigma_{y,d}^2 = \mathbb E_{z_x, z_y}\|z_x - z_y\|_2^2

    Not a metric: ``d(x, x) = 2 Σ σ²`` (zero only for zero variance). Symmetric, non-negative.

    Args:
        x: ``B_x`` Gaussians. y: ``B_y`` Gaussians of the same width ``D``.
        chunk_size: rows of ``x`` per block (None: all at once).

    Returns:
        ``[B_x, B_y]`` distances.

    Raises:
        TypeError, ValueError: non-Gaussian inputs, width/device/dtype mismatch, bad chunk size.
    """
    return _pairwise("csd_distance", x, y, chunk_size, _csd_block)


def _csd_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    return _sq_euclid(mx, my) + lx.exp().sum(-1)[:, None] + ly.exp().sum(-1)[None, :]


def wasserstein2_distance(
    x: GaussianEmbedding, y: GaussianEmbedding, *, chunk_size: int | None = None
) -> Tensor:
    r"""Squared 2-Wasserstein distance between diagonal Gaussians.

    .. math:: W_2^2(x, y) = \|\mu_x - \mu_y\|_2^2 + \|\sigma_x - \sigma_y\|_2^2

    (the ``wdist`` ablation of PCME++). A squared metric: symmetric, zero iff ``x == y``.
    Shapes, arguments and errors as :func:`csd_distance`.
    """
    return _pairwise("wasserstein2_distance", x, y, chunk_size, _wasserstein_block)


def _wasserstein_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    return _sq_euclid(mx, my) + _sq_euclid((0.5 * lx).exp(), (0.5 * ly).exp())


def _kl_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    lv_x, lv_y = lx[:, None, :], ly[None, :, :]
    diff = mx[:, None, :] - my[None, :, :]
    # exp of differences (not ratios of exps) keeps 1/σ_y² from overflowing at tiny variances
    terms = (lv_x - lv_y).exp() + diff.pow(2) * (-lv_y).exp() - 1.0 + lv_y - lv_x
    return 0.5 * terms.sum(-1)


def kl_divergence(
    x: GaussianEmbedding, y: GaussianEmbedding, *, chunk_size: int | None = None
) -> Tensor:
    r"""``KL(N_x ‖ N_y)`` for every pair (not symmetric; zero iff ``x == y``; non-negative).

    .. math:: \tfrac12\textstyle\sum_d\Big[\frac{\sigma_{x,d}^2}{\sigma_{y,d}^2}
       + \frac{(\mu_{x,d}-\mu_{y,d})^2}{\sigma_{y,d}^2} - 1
       + \log\sigma_{y,d}^2 - \log\sigma_{x,d}^2\Big]

    Shapes, arguments and errors as :func:`csd_distance`; swap the arguments (or use
    ``gaussian_distance(..., "reverse_kl")``) for ``KL(N_y ‖ N_x)``.
    """
    return _pairwise("kl_divergence", x, y, chunk_size, _kl_block)


def _reverse_kl_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    return _kl_block(my, ly, mx, lx).T


def symmetric_kl_divergence(
    x: GaussianEmbedding, y: GaussianEmbedding, *, chunk_size: int | None = None
) -> Tensor:
    r"""Jeffreys divergence ``KL(N_x ‖ N_y) + KL(N_y ‖ N_x)`` (the sum, not the average).

    Shapes, arguments and errors as :func:`csd_distance`.
    """
    return _pairwise("symmetric_kl_divergence", x, y, chunk_size, _symmetric_kl_block)


def _symmetric_kl_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    lv_x, lv_y = lx[:, None, :], ly[None, :, :]
    diff2 = (mx[:, None, :] - my[None, :, :]).pow(2)
    # the log-variance terms cancel; each ratio is an exp of a difference for stability
    terms = (lv_x - lv_y).exp() + (lv_y - lv_x).exp() - 2.0
    terms = terms + diff2 * ((-lv_x).exp() + (-lv_y).exp())
    return 0.5 * terms.sum(-1)


def bhattacharyya_distance(
    x: GaussianEmbedding, y: GaussianEmbedding, *, chunk_size: int | None = None
) -> Tensor:
    r"""Bhattacharyya distance ``-log ∫ sqrt(N_x N_y)`` between diagonal Gaussians.

    .. math:: \tfrac18\textstyle\sum_d\frac{(\mu_{x,d}-\mu_{y,d})^2}{\bar\sigma_d^2}
       + \tfrac12\sum_d\Big[\log\bar\sigma_d^2 - \tfrac12(\log\sigma_{x,d}^2
       + \log\sigma_{y,d}^2)\Big],\quad \bar\sigma^2 = \tfrac12(\sigma_x^2 + \sigma_y^2)

    Symmetric, non-negative, zero iff ``x == y``. Shapes, arguments and errors as
    :func:`csd_distance`.
    """
    return _pairwise("bhattacharyya_distance", x, y, chunk_size, _bhattacharyya_block)


def _bhattacharyya_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    lv_x, lv_y = lx[:, None, :], ly[None, :, :]
    log_avg = torch.logaddexp(lv_x, lv_y) - math.log(2.0)
    diff2 = (mx[:, None, :] - my[None, :, :]).pow(2)
    terms = 0.125 * diff2 * (-log_avg).exp() + 0.5 * (log_avg - 0.5 * (lv_x + lv_y))
    return terms.sum(-1)


def log_expected_likelihood(
    x: GaussianEmbedding, y: GaussianEmbedding, *, chunk_size: int | None = None
) -> Tensor:
    r"""Log expected likelihood kernel ``log ∫ N_x(z) N_y(z) dz`` (a *similarity*).

    .. math:: \log N(\mu_x; \mu_y, \Sigma_x + \Sigma_y) = -\tfrac12\textstyle\sum_d\Big[
       \frac{(\mu_{x,d}-\mu_{y,d})^2}{s_d} + \log s_d + \log 2\pi\Big],\quad
       s = \sigma_x^2 + \sigma_y^2

    Higher = more similar; symmetric. Includes the ``log 2π`` constant (PCME's evaluator drops
    it; ranking is unchanged). As a distance, :func:`gaussian_distance` uses ``-log ELK``,
    which can be negative (it is not a metric). Shapes, arguments and errors as
    :func:`csd_distance`.
    """
    return _pairwise("log_expected_likelihood", x, y, chunk_size, _log_elk_block)


def _log_elk_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    log_s = torch.logaddexp(lx[:, None, :], ly[None, :, :])
    diff2 = (mx[:, None, :] - my[None, :, :]).pow(2)
    return -0.5 * (diff2 * (-log_s).exp() + log_s + math.log(2.0 * math.pi)).sum(-1)


def _elk_distance_block(mx: Tensor, lx: Tensor, my: Tensor, ly: Tensor) -> Tensor:
    return -_log_elk_block(mx, lx, my, ly)


_BLOCKS: dict[str, Block] = {
    "csd": _csd_block,
    "wasserstein": _wasserstein_block,
    "kl": _kl_block,
    "reverse_kl": _reverse_kl_block,
    "symmetric_kl": _symmetric_kl_block,
    "bhattacharyya": _bhattacharyya_block,
    "elk": _elk_distance_block,
}


def _distance_matrix(
    fn: str,
    x: GaussianEmbedding,
    y: GaussianEmbedding,
    distance: GaussianDistance,
    chunk_size: int | None,
    *,
    check_finite: bool,
) -> Tensor:
    """:func:`gaussian_distance` for callers that validated ``x`` and ``y`` themselves (the
    losses): errors name ``fn``; with ``check_finite`` an overflowing result raises (one host
    sync)."""
    return _chunked(
        x, y, chunk_size, _BLOCKS[distance], fn=fn, check_inputs=False, check_result=check_finite
    )


def gaussian_distance(
    x: GaussianEmbedding,
    y: GaussianEmbedding,
    distance: GaussianDistance = "csd",
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """Any distance of :data:`GAUSSIAN_DISTANCES` by name, ``[B_x, B_y]``, lower = closer.

    ``"kl"`` is ``KL(N_x ‖ N_y)``, ``"reverse_kl"`` is ``KL(N_y ‖ N_x)``, ``"elk"`` is
    ``-log ELK`` (see :func:`log_expected_likelihood`).

    Raises:
        ValueError: unknown ``distance``, plus the errors of the chosen function.
    """
    fn = "gaussian_distance"
    check_choice(distance, "distance", fn, GAUSSIAN_DISTANCES)
    return _pairwise(fn, x, y, chunk_size, _BLOCKS[distance])


def _check_samples(fn: str, x_samples: object, y_samples: object) -> tuple[Tensor, Tensor]:
    xs = check_tensor(x_samples, "x_samples", fn, ndim=3, kind="float", dims="(B_x, K, D)")
    ys = check_tensor(y_samples, "y_samples", fn, ndim=3, kind="float", dims="(B_y, K', D)")
    check_same_width(fn, xs, "x_samples", ys, "y_samples")
    check_same_device(fn, x_samples=xs, y_samples=ys)
    if xs.shape[1] == 0 or ys.shape[1] == 0:
        raise ValueError(f"{fn}: need at least one sample per item, got K = 0")
    return xs, ys


def sample_match_logits(
    x_samples: Tensor,
    y_samples: Tensor,
    negative_scale: Tensor | float,
    shift: Tensor | float,
) -> Tensor:
    r"""PCME's per-sample-pair logits ``s = -a·sqrt(‖z_x^k − z_y^{k'}‖² + 10⁻⁶) + b``.

    Args:
        x_samples: ``[B_x, K, D]``. y_samples: ``[B_y, K', D]``.
        negative_scale: ``a`` (scalar tensor or float). shift: ``b``.

    Returns:
        ``[B_x, B_y, K·K']`` logits (index ``k·K' + k'``), computed in at least float32.

    Raises:
        TypeError, ValueError: bad ranks, dtypes, widths, devices or ``K = 0``; on CPU also
            non-finite samples or logits that overflow (samples too large).
    """
    fn = "sample_match_logits"
    xs, ys = _check_samples(fn, x_samples, y_samples)
    cpu = xs.device.type == "cpu"
    if cpu:
        check_finite(xs, "x_samples", fn)
        check_finite(ys, "y_samples", fn)
    return _check_result(fn, _sample_logits(xs, ys, negative_scale, shift), "logits", cpu)


def _sample_logits(
    xs: Tensor, ys: Tensor, negative_scale: Tensor | float, shift: Tensor | float
) -> Tensor:
    """:func:`sample_match_logits` without checks, in the compute dtype."""
    dtype = compute_dtype(xs, ys)
    (bx, k, d), (by, k2, _) = xs.shape, ys.shape
    sq = _sq_euclid(xs.reshape(bx * k, d).to(dtype), ys.reshape(by * k2, d).to(dtype))
    dist = (sq + _PCME_SQRT_EPS).sqrt().reshape(bx, k, by, k2).permute(0, 2, 1, 3)
    return -negative_scale * dist.reshape(bx, by, k * k2) + shift


def match_probability(
    x_samples: Tensor,
    y_samples: Tensor,
    negative_scale: Tensor | float = 15.0,
    shift: Tensor | float = 15.0,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""PCME's Monte-Carlo match probability (Chun et al., CVPR 2021, arXiv 2101.05068).

    .. math:: p(m=1\mid x, y) \approx \frac{1}{KK'}\sum_{k,k'}
       \tilde\sigma\big(-a\,\|z_x^k - z_y^{k'}\|_2 + b\big),\qquad
       \tilde\sigma(t) = \frac{e^t}{e^t + e^{-t}} = \operatorname{sigmoid}(2t)

    The *compressed* sigmoid ``σ̃`` is the one of the reference code (naver-ai/pcme issue #2),
    so ``a`` and ``b`` live on a ×2 scale compared with a plain sigmoid. The Euclidean distance
    has a ``10⁻⁶`` floor under the square root, as in the reference.

    Args:
        x_samples: ``[B_x, K, D]`` samples (e.g. :meth:`GaussianEmbedding.sample`).
        y_samples: ``[B_y, K', D]``.
        negative_scale: ``a`` (PCME COCO init 15). shift: ``b`` (COCO init 15).
        chunk_size: rows of ``x_samples`` per block (memory ``chunk_size·B_y·K·K'``).

    Returns:
        ``[B_x, B_y]`` probabilities in ``[0, 1]``; higher = more similar.

    Raises:
        TypeError, ValueError: as :func:`sample_match_logits`, or a bad ``chunk_size``.
    """
    fn = "match_probability"
    xs, ys = _check_samples(fn, x_samples, y_samples)
    _check_chunk(fn, chunk_size)
    return _match_probability(
        fn, xs, ys, negative_scale, shift, chunk_size, xs.device.type == "cpu"
    )


def _match_probability(
    fn: str,
    xs: Tensor,
    ys: Tensor,
    negative_scale: Tensor | float,
    shift: Tensor | float,
    chunk_size: int | None,
    check: bool,
) -> Tensor:
    if check:
        check_finite(xs, "x_samples", fn)
        check_finite(ys, "y_samples", fn)
    step = xs.shape[0] if chunk_size is None else chunk_size
    blocks = []
    for i in range(0, xs.shape[0], step):
        logits = _check_result(
            fn, _sample_logits(xs[i : i + step], ys, negative_scale, shift), "logits", check
        )
        blocks.append(torch.sigmoid(2.0 * logits).mean(-1))
    return torch.cat(blocks, dim=0)


class GaussianScores(NamedTuple):
    """Result of :func:`gaussian_scores`.

    Attributes:
        scores: ``[Nq, Ng]``, higher = more similar.
        query_uncertainty: ``[Nq]``, :meth:`GaussianEmbedding.uncertainty` of each query.
    """

    scores: Tensor
    query_uncertainty: Tensor


def gaussian_scores(
    query: GaussianEmbedding,
    gallery: GaussianEmbedding,
    distance: GaussianDistance | Literal["match_prob"] = "csd",
    *,
    chunk_size: int | None = 256,
    num_samples: int = 7,
    negative_scale: float = 15.0,
    shift: float = 15.0,
    generator: torch.Generator | None = None,
    check_finite: bool = True,
) -> GaussianScores:
    """Retrieval scores between probabilistic queries (texts) and gallery items (images).

    ``scores = -gaussian_distance(query, gallery, distance)`` (``"elk"`` gives the log ELK
    itself), or the PCME match probability for ``distance="match_prob"`` with ``num_samples``
    samples per item drawn with ``generator``, ``negative_scale`` and ``shift`` (the trained
    ``a`` and ``b``). Asymmetric choices read the query first: ``"kl"`` is
    ``KL(query ‖ gallery)``. Wrap the call in ``torch.no_grad()`` at evaluation time.

    Args:
        query: ``Nq`` Gaussians. gallery: ``Ng`` Gaussians of the same width.
        distance: one of :data:`GAUSSIAN_DISTANCES` or ``"match_prob"``.
        chunk_size: query rows per block (None: all at once).
        check_finite: raise on NaN/inf inputs and on scores that overflow (two host syncs,
            on any device).

    Returns:
        :class:`GaussianScores` ``(scores [Nq, Ng], query_uncertainty [Nq])``, float32 for
        half inputs.

    Raises:
        ValueError: unknown ``distance``, ``num_samples < 1``, plus the distance's errors;
            with ``check_finite`` non-finite inputs, scores or uncertainties.
    """
    fn = "gaussian_scores"
    check_choice(distance, "distance", fn, (*GAUSSIAN_DISTANCES, "match_prob"))
    _check_pair(fn, query, gallery, chunk_size)
    if distance == "match_prob":
        check_positive(num_samples, "num_samples", fn)
        _values(fn, query, gallery, check_finite)
        scores = _match_probability(
            fn,
            query.sample(num_samples, generator),
            gallery.sample(num_samples, generator),
            negative_scale,
            shift,
            chunk_size,
            check_finite,
        )
    else:
        block = _BLOCKS[distance]
        scores = -_chunked(
            query,
            gallery,
            chunk_size,
            block,
            fn=fn,
            check_inputs=check_finite,
            check_result=check_finite,
        )
    uncertainty = _check_result(fn, query.uncertainty(), "query uncertainties", check_finite)
    return GaussianScores(scores, uncertainty)
