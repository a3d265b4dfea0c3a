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
)

# The kernels live in the base layer so that the losses compute with the same ones; the
# clamp bound is part of these functions' documented behaviour, hence the re-export.
from textreid._gaussian_math import LOG_VAR_BOUND as LOG_VAR_BOUND
from textreid._gaussian_math import distance_matrix, refuse_overflow, sample_logits
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


def _check_values(fn: str, x: GaussianEmbedding, y: GaussianEmbedding) -> None:
    for name, t in (
        ("x.mean", x.mean),
        ("x.log_var", x.log_var),
        ("y.mean", y.mean),
        ("y.log_var", y.log_var),
    ):
        check_finite(t, name, fn)


def _check_chunk(fn: str, chunk_size: int | None) -> None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"{fn}: chunk_size must be None or an int >= 1, got {chunk_size!r}")


def _distances(
    fn: str,
    x: GaussianEmbedding,
    y: GaussianEmbedding,
    distance: str,
    chunk_size: int | None,
    check: bool,
) -> Tensor:
    """The kernel ``distance`` of :mod:`textreid._gaussian_math` for every pair; with
    ``check`` finite inputs and result."""
    if check:
        _check_values(fn, x, y)
    return distance_matrix(
        fn, x.mean, x.log_var, y.mean, y.log_var, distance, chunk_size, check=check
    )


def _pairwise(
    fn: str, x: GaussianEmbedding, y: GaussianEmbedding, chunk_size: int | None, distance: str
) -> Tensor:
    """A public distance: structure checked; on CPU also finite inputs and result."""
    _check_pair(fn, x, y, chunk_size)
    return _distances(fn, x, y, distance, chunk_size, x.mean.device.type == "cpu")


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
    return _pairwise("csd_distance", x, y, chunk_size, "csd")


def wasserstein2_distance(
    x: GaussianEmbedding, y: GaussianEmbedding, *, chunk_size: int | None = None
) -> Tensor:
    r"""Squared 2-Wasserstein distance between diagonal Gaussians.

    .. math:: W_2^2(x, y) = \|\mu_x - \mu_y\|_2^2 + \|\sigma_x - \sigma_y\|_2^2

    (the ``wdist`` ablation of PCME++). A squared metric: symmetric, zero iff ``x == y``.
    Shapes, arguments and errors as :func:`csd_distance`.
    """
    return _pairwise("wasserstein2_distance", x, y, chunk_size, "wasserstein")


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
    return _pairwise("kl_divergence", x, y, chunk_size, "kl")


def symmetric_kl_divergence(
    x: GaussianEmbedding, y: GaussianEmbedding, *, chunk_size: int | None = None
) -> Tensor:
    r"""Jeffreys divergence ``KL(N_x ‖ N_y) + KL(N_y ‖ N_x)`` (the sum, not the average).

    Shapes, arguments and errors as :func:`csd_distance`.
    """
    return _pairwise("symmetric_kl_divergence", x, y, chunk_size, "symmetric_kl")


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
    return _pairwise("bhattacharyya_distance", x, y, chunk_size, "bhattacharyya")


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
    return _pairwise("log_expected_likelihood", x, y, chunk_size, "log_elk")


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
    return _pairwise(fn, x, y, chunk_size, distance)


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
    return refuse_overflow(fn, sample_logits(xs, ys, negative_scale, shift), "logits", cpu)


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
        logits = refuse_overflow(
            fn, sample_logits(xs[i : i + step], ys, negative_scale, shift), "logits", check
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
        if check_finite:
            _check_values(fn, query, gallery)
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
        scores = -_distances(fn, query, gallery, distance, chunk_size, check_finite)
    uncertainty = refuse_overflow(fn, query.uncertainty(), "query uncertainties", check_finite)
    return GaussianScores(scores, uncertainty)
