"""InfoNCELoss: CLIP's loss without ids, the multi-positive form with ids, learnable scale."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tests.losses._slow import sides, softmax, transpose
from textreid.losses import InfoNCELoss
from textreid.losses.functional import infonce_loss


def test_hand_computed_two_pairs() -> None:
    eye = torch.eye(2, dtype=torch.float64)
    # Each row: logits (1/τ, 0) with τ = 0.5 -> -log(e^2 / (e^2 + 1)); ½ (mean + mean).
    want = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert InfoNCELoss(temperature=0.5)(eye, eye).item() == pytest.approx(want, rel=1e-12)


def test_equals_clip_cross_entropy_without_ids() -> None:
    v, t = torch.randn(6, 8), torch.randn(6, 8)
    logits = F.normalize(v) @ F.normalize(t).t() / 0.07
    target = torch.arange(6)
    clip = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    torch.testing.assert_close(InfoNCELoss()(v, t), clip)


def _slow(v: torch.Tensor, t: torch.Tensor, ip: list[int], tp: list[int], scale: float) -> float:
    sim, match = sides(v, t, ip, tp)

    def direction(s: list[list[float]], m: list[list[bool]]) -> float:
        total = 0.0
        for row, lab in zip(s, m):
            p = softmax([scale * x for x in row])
            pos = [math.log(pj) for pj, y in zip(p, lab) if y]
            total += -sum(pos) / len(pos) if pos else 0.0
        return total / len(s)

    return 0.5 * (direction(sim, match) + direction(transpose(sim), transpose(match)))


@given(b_i=st.integers(1, 5), b_t=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_multi_positive_matches_slow_loop(b_i: int, b_t: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b_i, 3, generator=g, dtype=torch.float64)
    t = torch.randn(b_t, 3, generator=g, dtype=torch.float64)
    ip = torch.randint(0, 3, (b_i,), generator=g)
    tp = torch.randint(0, 3, (b_t,), generator=g)
    got = infonce_loss(v, t, image_pids=ip, text_pids=tp, temperature=0.2)
    assert got.item() == pytest.approx(
        _slow(v, t, ip.tolist(), tp.tolist(), 5.0), rel=1e-9, abs=1e-9
    )


def test_learnable_scale_is_a_parameter_and_trains() -> None:
    loss = InfoNCELoss(learnable=True)
    params = list(loss.parameters())
    assert len(params) == 1
    assert params[0].item() == pytest.approx(math.log(1 / 0.07))
    loss(torch.randn(4, 3), torch.randn(4, 3)).backward()
    assert params[0].grad is not None
    assert list(InfoNCELoss().parameters()) == []
