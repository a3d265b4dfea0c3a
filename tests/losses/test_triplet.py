"""TripletLoss: hand value, slow loop over all triplets, identity awareness."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.losses._slow import sides, transpose
from textreid.losses import TripletLoss
from textreid.losses.functional import triplet_loss


def test_hand_computed() -> None:
    # Cosines: s = [[1, 0.6], [0, 1]] with unit vectors; margin 0.5.
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    # s = v t^T = [[1, 0.6], [0, 0.8]]. Image 0: [0.5 - 1 + 0.6]_+ = 0.1; image 1: [0.5 - 0.8 + 0]_+ = 0.
    # Caption 0: [0.5 - 1 + 0]_+ = 0; caption 1: [0.5 - 0.8 + 0.6]_+ = 0.3.
    out = TripletLoss(margin=0.5)(v, t)
    assert out.item() == pytest.approx((0.1 + 0.0) / 2 + (0.0 + 0.3) / 2)
    assert TripletLoss(margin=0.5, reduction="sum")(v, t).item() == pytest.approx(0.4)


def test_same_identity_is_never_a_negative() -> None:
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # s = [[1, 1], [0, 0]]. One shared id: no negatives at all, so every hinge is 0.
    assert TripletLoss()(v, t, torch.tensor([3, 3])).item() == 0.0
    # Instance labels: images give 0.2 and 0.2, captions 0 and 0.2 - 0 + 1 = 1.2.
    assert TripletLoss()(v, t).item() == pytest.approx((0.2 + 0.2) / 2 + (0.0 + 1.2) / 2)


def _slow(
    v: torch.Tensor, t: torch.Tensor, ip: list[int], tp: list[int], m: float, mining: str
) -> float:
    sim, match = sides(v, t, ip, tp)

    def direction(s: list[list[float]], lab: list[list[bool]]) -> float:
        total = 0.0
        for row, y in zip(s, lab):
            pos = [j for j, yj in enumerate(y) if yj]
            negs = [row[k] for k, yk in enumerate(y) if not yk]
            vals = []
            for j in pos:
                hinges = [max(0.0, m - row[j] + n) for n in negs]
                vals.append(
                    (max(hinges) if hinges else 0.0) if mining == "hardest" else sum(hinges)
                )
            total += sum(vals) / len(vals) if vals else 0.0
        return total / len(s)

    return direction(sim, match) + direction(transpose(sim), transpose(match))


@given(
    b_i=st.integers(1, 6),
    b_t=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    mining=st.sampled_from(["hardest", "sum"]),
    margin=st.sampled_from([0.0, 0.2, 1.0]),
)
def test_matches_slow_loop(b_i: int, b_t: int, seed: int, mining: str, margin: float) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b_i, 3, generator=g, dtype=torch.float64)
    t = torch.randn(b_t, 3, generator=g, dtype=torch.float64)
    ip = torch.randint(0, 3, (b_i,), generator=g)
    tp = torch.randint(0, 3, (b_t,), generator=g)
    got = triplet_loss(v, t, image_pids=ip, text_pids=tp, margin=margin, mining=mining)
    want = _slow(v, t, ip.tolist(), tp.tolist(), margin, mining)
    assert got.item() == pytest.approx(want, rel=1e-9, abs=1e-12)
