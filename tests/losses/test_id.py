"""IDLoss: initialisation as IRRA, hand value, unequal sides, id range."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from textreid.losses import IDLoss
from textreid.losses.functional import id_loss


def test_initialisation_as_irra() -> None:
    torch.manual_seed(0)
    loss = IDLoss(2000, 64)
    assert loss.classifier.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert bool((loss.classifier.bias == 0).all())
    assert sum(p.numel() for p in loss.parameters()) == 2000 * 64 + 2000


def test_hand_computed_and_near_log_c_at_init() -> None:
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # Image: logits (2, 0), class 0; caption: logits (0, 1), class 0.
    want = 0.5 * (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0)))
    assert id_loss(v, t, torch.tensor([0]), weight=w).item() == pytest.approx(want)
    loss = IDLoss(1000, 8)
    assert loss(
        torch.randn(16, 8), torch.randn(16, 8), torch.randint(0, 1000, (16,))
    ).item() == pytest.approx(math.log(1000), abs=0.01)


def test_unequal_sides_average_each_side() -> None:
    loss = IDLoss(3, 4)
    v, t = torch.randn(2, 4), torch.randn(5, 4)
    ip, tp = torch.tensor([0, 1]), torch.tensor([0, 0, 1, 2, 2])
    w, b = loss.classifier.weight, loss.classifier.bias
    want = 0.5 * (F.cross_entropy(F.linear(v, w, b), ip) + F.cross_entropy(F.linear(t, w, b), tp))
    torch.testing.assert_close(loss(v, t, image_pids=ip, text_pids=tp), want)


@pytest.mark.parametrize("bad", [-1, 3])
def test_ids_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match=r"IDLoss: pids must lie in 0\.\.2 \(num_classes=3\)"):
        IDLoss(3, 4)(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, bad]))


def test_ids_are_required() -> None:
    with pytest.raises(ValueError, match=r"IDLoss: pids .* are required"):
        IDLoss(3, 4)(torch.randn(2, 4), torch.randn(2, 4))


def test_width_must_match_classifier() -> None:
    with pytest.raises(
        ValueError, match="IDLoss: the classifier has width 4 but the features have width 5"
    ):
        IDLoss(3, 4)(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 1]))


def _slow_id(
    v: torch.Tensor, t: torch.Tensor, ip: list[int], tp: list[int], w: torch.Tensor, b: torch.Tensor
) -> float:
    def ce(x: torch.Tensor, y: int) -> float:
        logits = [float(x @ w[c]) + float(b[c]) for c in range(w.shape[0])]
        top = max(logits)
        return top + math.log(sum(math.exp(z - top) for z in logits)) - logits[y]

    img = sum(ce(v[i], y) for i, y in enumerate(ip)) / len(ip)
    txt = sum(ce(t[j], y) for j, y in enumerate(tp)) / len(tp)
    return 0.5 * (img + txt)


@given(b_i=st.integers(1, 5), b_t=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_matches_slow_loop(b_i: int, b_t: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b_i, 3, generator=g, dtype=torch.float64)
    t = torch.randn(b_t, 3, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    ip = torch.randint(0, 4, (b_i,), generator=g)
    tp = torch.randint(0, 4, (b_t,), generator=g)
    got = id_loss(v, t, image_pids=ip, text_pids=tp, weight=w, bias=b)
    assert got.item() == pytest.approx(_slow_id(v, t, ip.tolist(), tp.tolist(), w, b), rel=1e-9)
