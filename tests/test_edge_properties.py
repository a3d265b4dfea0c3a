"""Every exported loss, head and distance at the edges of the float range.

For inputs scaled by 1e-30 .. 1e30 (clipped to what the dtype holds), with a zero row, in
float16, bfloat16, float32 and float64, and for log-variances from -1e30 to 1e30, each call
either returns finite values with finite gradients or raises a ``ValueError``/``TypeError``
naming the function called. Never NaN, never inf, never a bare ``RuntimeError``.

Names of ``textreid.losses.__all__`` and ``textreid.heads.__all__`` left out, and why:
containers (``DirectionalLosses``, ``LossOutput``, ``GaussianEmbedding``, ``GaussianScores``),
the constant ``GAUSSIAN_DISTANCES``, the distributed gathers (``gather_features``,
``gather_with_grad``: identity on one process) and ``blockwise_pairs`` (a chunking driver that
computes nothing itself). ``part_commonality`` is a detached statistic: its values are checked.
The text utilities (``textreid.text``) compute on integer ids and strings, not floats.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from textreid import heads, losses
from textreid.heads import GaussianEmbedding

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SCALES = [1e-30, 1e-8, 1.0, 1e8, 1e30]
LOG_VARS = [-1e30, -1e4, -100.0, -88.8, 0.0, 88.8, 100.0, 1e4, 1e30]
B, D, K, L, V = 4, 8, 3, 5, 7
PIDS = torch.tensor([0, 0, 1, 2])

Case = Callable[[Callable[..., Tensor]], object]
"""Builds the inputs with ``make(*shape)`` (scaled leaves) and calls the function."""


def _pair(loss: torch.nn.Module) -> Case:
    return lambda make: loss(make(B, D), make(B, D), PIDS)


def _gauss(make: Callable[..., Tensor], lv: Callable[..., Tensor]) -> GaussianEmbedding:
    return GaussianEmbedding(make(B, D), lv(B, D))


GEN = torch.Generator().manual_seed(0)


FEATURE_CASES: dict[str, Case] = {
    "SDMLoss": _pair(losses.SDMLoss()),
    "ASDMLoss": _pair(losses.ASDMLoss()),
    "InfoNCELoss": _pair(losses.InfoNCELoss()),
    "TripletLoss": _pair(losses.TripletLoss()),
    "CMPMLoss": _pair(losses.CMPMLoss()),
    "CMPCLoss": _pair(losses.CMPCLoss(3, D)),
    "IDLoss": _pair(losses.IDLoss(3, D)),
    "WeightedSum": _pair(
        losses.WeightedSum({"sdm": (1.0, losses.SDMLoss()), "tri": (0.5, losses.TripletLoss())})
    ),
    "MultiLevelAlignmentLoss": lambda make: losses.MultiLevelAlignmentLoss()(
        [make(B, D), make(B, D)], [make(B, D), make(B, D), make(B, D)], PIDS
    ),
    "CommonalityMarginRankingLoss": lambda make: losses.CommonalityMarginRankingLoss()(
        make(B, K, D), make(B, K, D), PIDS
    ),
    "part_commonality": lambda make: losses.part_commonality(
        make(B, K, D), make(B, K, D), PIDS, PIDS
    ),
    "EFALoss": lambda make: losses.EFALoss()(make(B, L, D), make(B, L, D)),
    "MLMLoss": lambda make: losses.MLMLoss()(make(B, L, V), torch.randint(1, V, (B, L))),
    "AttributeMaskReconstructionLoss": lambda make: losses.AttributeMaskReconstructionLoss()(
        make(B, L, V), torch.randint(0, V, (B, L)), make(B).abs()
    ),
    "SparseTokenSimilarity": lambda make: heads.SparseTokenSimilarity()(
        make(B, L, D), make(B, L, D)
    ),
    "maxsim_logsumexp": lambda make: heads.maxsim_logsumexp(make(B, L, D), make(B, L, D)),
    "sparse_aggregate": lambda make: heads.sparse_aggregate(make(B, L, D), make(B, L, D)),
    "GaussianHead": lambda make: heads.GaussianHead(D, D).to(make(1).dtype)(make(B, L, D)),
    "GaussianHead(mean pooling)": lambda make: heads.GaussianHead(D, D, token_pooling="mean").to(
        make(1).dtype
    )(make(B, L, D)),
    "sample_match_logits": lambda make: heads.sample_match_logits(
        make(B, K, D), make(B, K, D), 15.0, 15.0
    ),
    "match_probability": lambda make: heads.match_probability(make(B, K, D), make(B, K, D)),
}


def _gaussian_cases() -> dict[
    str, Callable[[Callable[..., Tensor], Callable[..., Tensor]], object]
]:
    g = _gauss
    out: dict[str, Callable[[Callable[..., Tensor], Callable[..., Tensor]], object]] = {
        "PCMELoss": lambda m, v: losses.PCMELoss(num_samples=2)(
            g(m, v), g(m, v), PIDS, generator=torch.Generator().manual_seed(0)
        ),
        "PCMELoss(samples)": lambda m, v: losses.PCMELoss()(
            g(m, v), g(m, v), PIDS, image_samples=m(B, K, D), text_samples=m(B, K, D)
        ),
        "CSDLoss": lambda m, v: losses.CSDLoss()(g(m, v), g(m, v), PIDS),
        "GaussianKLLoss": lambda m, v: losses.GaussianKLLoss()(g(m, v)),
        "PointContrastLoss": lambda m, v: losses.PointContrastLoss(num_samples=2)(
            g(m, v), g(m, v), PIDS, generator=torch.Generator().manual_seed(0)
        ),
        "PointContrastLoss(samples)": lambda m, v: losses.PointContrastLoss()(
            g(m, v), g(m, v), PIDS, image_samples=m(B, K, D), text_samples=m(B, K, D)
        ),
        "gaussian_scores(match_prob)": lambda m, v: heads.gaussian_scores(
            g(m, v), g(m, v), "match_prob", generator=torch.Generator().manual_seed(0)
        ),
    }
    for name in heads.GAUSSIAN_DISTANCES:
        out[f"DistributionContrastLoss({name})"] = lambda m, v, n=name: (
            losses.DistributionContrastLoss(distance=n)(g(m, v), g(m, v), PIDS)
        )
        out[f"gaussian_distance({name})"] = lambda m, v, n=name: heads.gaussian_distance(
            g(m, v), g(m, v), n
        )
        out[f"gaussian_scores({name})"] = lambda m, v, n=name: heads.gaussian_scores(
            g(m, v), g(m, v), n
        )
    for fn in (
        heads.csd_distance,
        heads.wasserstein2_distance,
        heads.kl_divergence,
        heads.symmetric_kl_divergence,
        heads.bhattacharyya_distance,
        heads.log_expected_likelihood,
    ):
        out[fn.__name__] = lambda m, v, f=fn: f(g(m, v), g(m, v))
    return out


GAUSSIAN_CASES = _gaussian_cases()


class _Inputs:
    """Leaf factory for one call: records every leaf's float64 values so that a float16 call
    can be replayed in float32 (the oracle for gradients that float16 cannot hold)."""

    def __init__(self, dtype: torch.dtype, scale: float) -> None:
        self.dtype = dtype
        # randn stays below 8 in magnitude at these sizes: clip the scale to the dtype
        self.scale = min(scale, torch.finfo(dtype).max / 8)
        self.values: list[Tensor] = []
        self.leaves: list[Tensor] = []
        self.replay: list[Tensor] | None = None

    def _leaf(self, values: Tensor) -> Tensor:
        if self.replay is not None:
            values = self.replay[len(self.leaves)]
        else:
            self.values.append(values)
        leaf = values.to(self.dtype).requires_grad_()
        self.leaves.append(leaf)
        return leaf

    def make(self, *shape: int) -> Tensor:
        """N(0, 1) * scale, first row zero."""
        x = torch.randn(*shape, generator=GEN, dtype=torch.float64) * self.scale
        if x.dim() > 1:
            x[0] = 0.0
        return self._leaf(x)

    def log_var(self, level: float) -> Callable[..., Tensor]:
        """Log-variances around ``level`` (clipped to the dtype); N(-2, 1) for ``level=None``."""
        info = torch.finfo(self.dtype)
        lv = max(min(level, info.max / 2), -info.max / 2)

        def make(*shape: int) -> Tensor:
            jitter = torch.rand(*shape, generator=GEN, dtype=torch.float64)
            return self._leaf(lv + jitter * max(abs(lv) * 1e-3, 1.0))

        return make

    def replayed(self, dtype: torch.dtype) -> _Inputs:
        other = _Inputs(dtype, 1.0)
        other.replay = self.values
        return other


def _outputs(result: object) -> list[Tensor]:
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, GaussianEmbedding):
        return [result.mean, result.log_var]
    assert isinstance(result, tuple)  # DirectionalLosses, GaussianScores
    return [t for t in result if isinstance(t, Tensor)]


def _grads(name: str, call: Callable[[_Inputs], object], inputs: _Inputs) -> list[Tensor] | None:
    """Gradients of the summed outputs, or None for a clear error or a detached result."""
    try:
        outs = _outputs(call(inputs))
    except (ValueError, TypeError) as e:
        error = str(e)
    else:
        error = None
    if error is not None:
        called = name.split("(")[0]
        assert error.startswith(f"{called}:"), f"{name}: unclear error {error!r}"
        return None
    for t in outs:
        assert bool(torch.isfinite(t).all()), f"{name}: non-finite output {t}"
    attached = [t.double().sum() for t in outs if t.requires_grad]
    if not attached:  # detached results (part_commonality)
        return None
    torch.stack(attached).sum().backward()
    return [torch.zeros(0) if x.grad is None else x.grad for x in inputs.leaves]


def _assert_finite_or_clear_error(
    name: str, call: Callable[[_Inputs], object], inputs: _Inputs
) -> None:
    grads = _grads(name, call, inputs)
    if grads is None:
        return
    bad = [g for g in grads if not bool(torch.isfinite(g).all())]
    if not bad:
        return
    # float16 cannot hold a gradient beyond 65504: accept inf only where the same inputs in
    # float32 give a gradient that large (10% slack: float16 accumulates its own rounding)
    assert inputs.dtype == torch.float16, f"{name}: non-finite gradient"
    ref = _grads(name, call, inputs.replayed(torch.float32))
    assert ref is not None
    for g16, g32 in zip(grads, ref):
        over = ~torch.isfinite(g16)
        assert bool((g32[over].abs() > 0.9 * torch.finfo(torch.float16).max).all()), (
            f"{name}: non-finite float16 gradient where float32 gives {g32[over]}"
        )


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(FEATURE_CASES))
def test_feature_inputs_across_scales(name: str, dtype: torch.dtype, scale: float) -> None:
    _assert_finite_or_clear_error(
        name, lambda i: FEATURE_CASES[name](i.make), _Inputs(dtype, scale)
    )


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(GAUSSIAN_CASES))
def test_gaussian_means_across_scales(name: str, dtype: torch.dtype, scale: float) -> None:
    def call(i: _Inputs) -> object:
        return GAUSSIAN_CASES[name](i.make, i.log_var(-2.0))

    _assert_finite_or_clear_error(name, call, _Inputs(dtype, scale))


@pytest.mark.parametrize("level", LOG_VARS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(GAUSSIAN_CASES))
def test_gaussian_log_variances_across_the_range(
    name: str, dtype: torch.dtype, level: float
) -> None:
    # the zero first rows of both sides put the level on a distance matrix's diagonal
    def call(i: _Inputs) -> object:
        return GAUSSIAN_CASES[name](i.make, i.log_var(level))

    _assert_finite_or_clear_error(name, call, _Inputs(dtype, 1.0))
