"""ASDMLoss: the first-positive rule, the weight gradient, slow-loop agreement."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.losses._slow import kl_row, sides, transpose
from textreid.losses import ASDMLoss, SDMLoss
from textreid.losses.functional import asdm_loss, sdm_loss


def _slow_asdm(
    v: torch.Tensor, t: torch.Tensor, ip: list[int], tp: list[int], alpha: float, scale: float
) -> float:
    sim, match = sides(v, t, ip, tp)

    def direction(s: list[list[float]], m: list[list[bool]]) -> float:
        total = 0.0
        for row, lab in zip(s, m):
            top = max(range(len(row)), key=lambda j: (row[j], -j))
            firsts = [j for j, y in enumerate(lab) if y]
            gap = row[top] - row[firsts[0]] if firsts and top != firsts[0] else 0.0
            total += (1 + alpha * gap) * kl_row([scale * x for x in row], lab, "l1", 1e-8)
        return total / len(s)

    return direction(sim, match) + direction(transpose(sim), transpose(match))


@given(
    b_i=st.integers(1, 5),
    b_t=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    alpha=st.sampled_from([0.1, 10.0]),
)
def test_matches_slow_loop(b_i: int, b_t: int, seed: int, alpha: float) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b_i, 3, generator=g, dtype=torch.float64)
    t = torch.randn(b_t, 3, generator=g, dtype=torch.float64)
    ip = torch.randint(0, 3, (b_i,), generator=g)
    tp = torch.randint(0, 3, (b_t,), generator=g)
    got = asdm_loss(v, t, image_pids=ip, text_pids=tp, alpha=alpha, temperature=0.2)
    want = _slow_asdm(v, t, ip.tolist(), tp.tolist(), alpha, 5.0)
    assert got.item() == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_first_positive_rule_hand_case() -> None:
    # Perfectly aligned pairs, pids [0, 0]: row 1's top-1 is its own pair (index 1), but the
    # first positive is index 0, so it gets w = 1 + α (s_11 - s_10) = 1 + α (1 - 0).
    eye = torch.eye(2, dtype=torch.float64)
    pids = torch.tensor([0, 0])
    rows = asdm_loss(eye, eye, pids, alpha=0.5, temperature=1.0, reduction="none")
    base = sdm_loss(eye, eye, pids, temperature=1.0, reduction="none")
    torch.testing.assert_close(
        rows.image_to_text, base.image_to_text * torch.tensor([1.0, 1.5], dtype=torch.float64)
    )
    torch.testing.assert_close(
        rows.text_to_image, base.text_to_image * torch.tensor([1.0, 1.5], dtype=torch.float64)
    )


def test_alpha_zero_and_correct_top1_equal_sdm() -> None:
    v, t = torch.randn(6, 4), torch.randn(6, 4)
    pids = torch.tensor([0, 1, 1, 2, 3, 3])
    torch.testing.assert_close(ASDMLoss(alpha=0.0)(v, t, pids), SDMLoss()(v, t, pids))
    # Unique ids and aligned pairs: every top-1 is the first positive, so w = 1.
    torch.testing.assert_close(ASDMLoss(alpha=10.0)(v, v), SDMLoss()(v, v))


def test_detach_weight_changes_only_the_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(8, 4, generator=g, dtype=torch.float64)
    t = torch.randn(8, 4, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    grads = []
    values = []
    for detach in (False, True):
        x = v.clone().requires_grad_(True)
        loss = ASDMLoss(alpha=10.0, detach_weight=detach)(x, t, pids)
        loss.backward()
        values.append(loss.detach())
        grads.append(x.grad)
    torch.testing.assert_close(values[0], values[1])
    assert not torch.allclose(grads[0], grads[1])


def test_row_without_match_has_unit_weight() -> None:
    v, t = torch.randn(2, 3), torch.randn(3, 3)
    ip, tp = torch.tensor([0, 7]), torch.tensor([0, 1, 0])
    a = asdm_loss(v, t, image_pids=ip, text_pids=tp, reduction="none", alpha=10.0)
    s = sdm_loss(v, t, image_pids=ip, text_pids=tp, reduction="none")
    torch.testing.assert_close(a.image_to_text[1], s.image_to_text[1])
