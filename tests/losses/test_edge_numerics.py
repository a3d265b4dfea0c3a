"""Edge numerics of the matching losses: zero rows, huge and tiny scales, temperatures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from textreid._numerics import l2_normalize, zero_row_eps
from textreid.losses import (
    ASDMLoss,
    CMPMLoss,
    DistributionContrastLoss,
    EFALoss,
    InfoNCELoss,
    PointContrastLoss,
    SDMLoss,
    TripletLoss,
    WeightedSum,
)

PAIR_LOSSES = {
    "SDMLoss": SDMLoss(),
    "ASDMLoss": ASDMLoss(),
    "InfoNCELoss": InfoNCELoss(),
    "TripletLoss": TripletLoss(),
    "CMPMLoss": CMPMLoss(),
}


def _pair(dtype: torch.dtype, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(4, 8, generator=g, dtype=torch.float64) * scale
    t = torch.randn(4, 8, generator=g, dtype=torch.float64) * scale
    v[0] = 0.0
    return v.to(dtype).requires_grad_(), t.to(dtype).requires_grad_()


def test_zero_row_jacobian_is_identity_over_eps() -> None:
    x = torch.zeros(1, 5, dtype=torch.float64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda a: l2_normalize(a), x).reshape(5, 5)
    torch.testing.assert_close(jac, torch.eye(5, dtype=torch.float64) / 1e-6, rtol=1e-12, atol=0)
    assert zero_row_eps(torch.float16) == pytest.approx(65504**-0.5)
    assert zero_row_eps(torch.bfloat16) == zero_row_eps(torch.float32) == 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ordinary_rows_equal_torch_normalize_bit_for_bit(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    x = (
        torch.randn(300, 64, generator=g, dtype=dtype)
        * torch.logspace(-5, 5, 300, dtype=dtype)[:, None]
    )
    assert torch.equal(l2_normalize(x, 1), F.normalize(x, dim=1))


@settings(max_examples=40, deadline=None)
@given(
    # rows from ~2e-5 (above the 1e-6 floor) to ~1e36 (near float32's largest value)
    exponent=st.integers(-18, 118),
    seed=st.integers(0, 2**16),
)
def test_normalisation_is_exact_across_float32_scales(exponent: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 16, generator=g, dtype=torch.float64)
    ref = (x / x.norm(dim=1, keepdim=True)).float()
    scaled = (x * 2.0**exponent * 1.37).float()  # not a power of two: rounding is exercised
    torch.testing.assert_close(l2_normalize(scaled), ref, rtol=0, atol=3e-7)


def test_gradcheck_of_the_normalisation() -> None:
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: l2_normalize(a, 1), (x,))


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
def test_zero_row_gradient_is_bounded(name: str) -> None:
    # The issue: a zero row got 3.1e13 (F.normalize's 1e-12 floor) in float32 and inf in float16.
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        v, t = _pair(dtype)
        loss = PAIR_LOSSES[name](v, t)
        loss.backward()
        assert v.grad is not None
        assert t.grad is not None
        assert bool(torch.isfinite(v.grad).all() & torch.isfinite(t.grad).all()), (name, dtype)
        # |d loss / d n(v_0)| is below 2 * scale (50) here, so 1/eps bounds the rest
        assert float(v.grad[0].abs().max()) <= 100.0 / zero_row_eps(dtype), (name, dtype)


@pytest.mark.parametrize("name", ["SDMLoss", "ASDMLoss", "InfoNCELoss", "TripletLoss"])
@pytest.mark.parametrize("scale", [1e19, 1e30, 1e-4])
def test_cosine_losses_are_scale_invariant(name: str, scale: float) -> None:
    v, t = _pair(torch.float64)
    v, t = v.detach()[1:], t.detach()[1:]
    ref = PAIR_LOSSES[name](v, t)
    got = PAIR_LOSSES[name](v.float() * scale, t.float() * scale)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SDMLoss(temperature=1e-40), "SDMLoss: temperature must be finite and in"),
        (lambda: SDMLoss(temperature=math.inf), "SDMLoss: temperature must be finite and in"),
        (lambda: SDMLoss(temperature=math.nan), "SDMLoss: temperature must be > 0, got nan"),
        (lambda: ASDMLoss(temperature=1e5), "ASDMLoss: temperature must be finite and in"),
        (lambda: InfoNCELoss(temperature=math.inf), "InfoNCELoss: temperature must be finite"),
        (lambda: EFALoss(temperature=1e-40), "EFALoss: temperature must be finite and in"),
        (
            lambda: DistributionContrastLoss(temperature=math.inf),
            "DistributionContrastLoss: temperature must be finite and in",
        ),
        (
            lambda: PointContrastLoss(temperature=1e-9),
            "PointContrastLoss: temperature must be finite and in",
        ),
        (
            lambda: WeightedSum({"sdm": (math.inf, SDMLoss())}),
            "WeightedSum: the weight of 'sdm' must be finite, got inf",
        ),
    ],
)
def test_scales_outside_the_range_are_refused(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", ["SDMLoss", "ASDMLoss", "InfoNCELoss"])
def test_logit_scale_outside_the_range_is_refused(name: str) -> None:
    v, t = _pair(torch.float32)
    loss = PAIR_LOSSES[name]
    for bad in (math.inf, 1e40, math.nan):
        with pytest.raises(ValueError, match=f"{name}: logit_scale must be"):
            loss(v, t, logit_scale=bad)
        with pytest.raises(ValueError, match=f"{name}: logit_scale must be"):
            loss(v, t, logit_scale=torch.tensor(bad))


def test_unchecked_tensor_logit_scale_is_clamped_not_nan() -> None:
    # Without the (host-syncing) check an out-of-range tensor scale is clamped in the graph.
    v, t = _pair(torch.float32)
    loss = SDMLoss(check_finite=False)
    at_inf = loss(v, t, logit_scale=torch.tensor(math.inf))
    assert bool(torch.isfinite(at_inf))
    torch.testing.assert_close(at_inf, loss(v, t, logit_scale=1e4))


@pytest.mark.parametrize("value", [1e-3, 0.02, 0.04, 0.07, 0.5, 1.0])
def test_published_temperatures_are_accepted(value: float) -> None:
    v, t = _pair(torch.float32)
    assert bool(torch.isfinite(SDMLoss(temperature=value)(v, t)))
    assert bool(torch.isfinite(InfoNCELoss()(v, t, logit_scale=1.0 / value)))
