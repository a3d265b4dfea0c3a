"""SDMLoss: hand value, slow-loop agreement, logit_scale handling."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.losses._slow import kl_row, sides, transpose
from textreid.losses import SDMLoss
from textreid.losses.functional import sdm_loss


def test_hand_computed_two_pairs() -> None:
    # Orthogonal unit pairs, scale 1: every row has logits (1, 0) and its own pair as target.
    eye = torch.eye(2, dtype=torch.float64)
    p0 = math.e / (math.e + 1)
    row = p0 * (math.log(p0) - math.log(1 + 1e-8)) + (1 - p0) * (math.log(1 - p0) - math.log(1e-8))
    assert SDMLoss(temperature=1.0)(eye, eye).item() == pytest.approx(2 * row, rel=1e-12)


def test_hand_computed_shared_identity() -> None:
    # Both captions belong to one person: q = (1/2, 1/2) and p = uniform, so KL = 0.
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    assert sdm_loss(v, t, torch.tensor([5, 5])).item() == pytest.approx(
        2 * math.log(1 / (0.5 + 1e-8) * 0.5), abs=1e-6
    )


def _slow_sdm(
    v: torch.Tensor, t: torch.Tensor, ip: list[int], tp: list[int], scale: float
) -> float:
    sim, match = sides(v, t, ip, tp)
    i2t = [kl_row([scale * s for s in r], m, "l1", 1e-8) for r, m in zip(sim, match)]
    t2i = [
        kl_row([scale * s for s in r], m, "l1", 1e-8)
        for r, m in zip(transpose(sim), transpose(match))
    ]
    return sum(i2t) / len(i2t) + sum(t2i) / len(t2i)


@given(
    b_i=st.integers(1, 5),
    b_t=st.integers(1, 5),
    d=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1.0, 5.0, 50.0]),
)
def test_matches_slow_loop(b_i: int, b_t: int, d: int, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b_i, d, generator=g, dtype=torch.float64)
    t = torch.randn(b_t, d, generator=g, dtype=torch.float64)
    ip = torch.randint(0, 3, (b_i,), generator=g)
    tp = torch.randint(0, 3, (b_t,), generator=g)
    got = sdm_loss(v, t, image_pids=ip, text_pids=tp, logit_scale=scale)
    assert got.item() == pytest.approx(
        _slow_sdm(v, t, ip.tolist(), tp.tolist(), scale), rel=1e-9, abs=1e-9
    )


def test_logit_scale_overrides_temperature() -> None:
    v, t = torch.randn(4, 3), torch.randn(4, 3)
    assert SDMLoss(temperature=0.02)(v, t, logit_scale=10.0) == SDMLoss(temperature=0.1)(v, t)
    tensor_scale = torch.tensor(10.0)
    torch.testing.assert_close(
        SDMLoss()(v, t, logit_scale=tensor_scale), SDMLoss(temperature=0.1)(v, t)
    )


def test_logit_scale_tensor_receives_gradient() -> None:
    log_scale = torch.tensor(math.log(20.0), requires_grad=True)
    SDMLoss()(torch.randn(4, 3), torch.randn(4, 3), logit_scale=log_scale.exp()).backward()
    assert log_scale.grad is not None
    assert log_scale.grad.abs() > 0


def test_row_without_match_uses_epsilon_floor() -> None:
    # Image 1 (pid 9) has no caption: its row is KL(p || 0 + eps), finite and large.
    v, t = torch.randn(2, 3), torch.randn(2, 3)
    out = sdm_loss(
        v, t, image_pids=torch.tensor([0, 9]), text_pids=torch.tensor([0, 0]), reduction="none"
    )
    p = torch.softmax(50 * torch.nn.functional.cosine_similarity(v[1:], t), dim=0)
    expected = (p * p.log()).sum() - math.log(1e-8)
    assert out.image_to_text[1].item() == pytest.approx(expected.item(), rel=1e-5)
