"""CMPMLoss and CMPCLoss: hand values and slow loops."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.losses._slow import kl_row
from textreid.losses import CMPCLoss, CMPMLoss
from textreid.losses.functional import cmpc_loss, cmpm_loss


def test_hand_computed_two_pairs() -> None:
    # v = 2·e_k, t = e_k: image logits (2, 0), text logits (1, 0); instance labels.
    v = 2 * torch.eye(2, dtype=torch.float64)
    t = torch.eye(2, dtype=torch.float64)

    def row(a: float) -> float:
        p = math.exp(a) / (math.exp(a) + 1)
        return p * (math.log(p) - math.log(1 + 1e-8)) + (1 - p) * (math.log(1 - p) - math.log(1e-8))

    assert CMPMLoss()(v, t).item() == pytest.approx(row(2.0) + row(1.0), rel=1e-12)


def _slow_cmpm(v: torch.Tensor, t: torch.Tensor, ip: list[int], tp: list[int]) -> float:
    def direction(a: torch.Tensor, b: torch.Tensor, pa: list[int], pb: list[int]) -> float:
        total = 0.0
        for i in range(a.shape[0]):
            logits = [float(a[i] @ b[j]) / math.sqrt(float(b[j] @ b[j])) for j in range(b.shape[0])]
            total += kl_row(logits, [pa[i] == pb[j] for j in range(len(pb))], "l2", 1e-8)
        return total / a.shape[0]

    return direction(v, t, ip, tp) + direction(t, v, tp, ip)


@given(b_i=st.integers(1, 5), b_t=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_cmpm_matches_slow_loop(b_i: int, b_t: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b_i, 3, generator=g, dtype=torch.float64)
    t = torch.randn(b_t, 3, generator=g, dtype=torch.float64)
    ip = torch.randint(0, 3, (b_i,), generator=g)
    tp = torch.randint(0, 3, (b_t,), generator=g)
    got = cmpm_loss(v, t, image_pids=ip, text_pids=tp)
    assert got.item() == pytest.approx(
        _slow_cmpm(v, t, ip.tolist(), tp.tolist()), rel=1e-9, abs=1e-9
    )


def _slow_cmpc(v: torch.Tensor, t: torch.Tensor, pids: list[int], w: torch.Tensor) -> float:
    def ce(x: torch.Tensor, y: int) -> float:
        logits = [float(x @ w[c]) / math.sqrt(float(w[c] @ w[c])) for c in range(w.shape[0])]
        top = max(logits)
        return -(logits[y] - top - math.log(sum(math.exp(z - top) for z in logits)))

    total = 0.0
    for i, y in enumerate(pids):
        t_dir = t[i] / math.sqrt(float(t[i] @ t[i]))
        v_dir = v[i] / math.sqrt(float(v[i] @ v[i]))
        total += ce(float(v[i] @ t_dir) * t_dir, y) + ce(float(t[i] @ v_dir) * v_dir, y)
    return total / len(pids)


@given(b=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_cmpc_matches_slow_loop(b: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, 3, generator=g, dtype=torch.float64)
    t = torch.randn(b, 3, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    pids = torch.randint(0, 4, (b,), generator=g)
    got = cmpc_loss(v, t, pids, weight=w)
    assert got.item() == pytest.approx(_slow_cmpc(v, t, pids.tolist(), w), rel=1e-9)


def test_cmpc_hand_computed() -> None:
    # Parallel pair along e_0 with length 2: both projections are 2·e_0; W rows e_0, e_1.
    v = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[3.0, 0.0]], dtype=torch.float64)
    w = torch.tensor([[5.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    ce_v = math.log(1 + math.exp(-2.0))  # logits (2, 0), class 0
    ce_t = math.log(1 + math.exp(-3.0))  # logits (3, 0), class 0
    assert cmpc_loss(v, t, torch.tensor([0]), weight=w).item() == pytest.approx(ce_v + ce_t)


def test_cmpc_owns_its_classifier() -> None:
    loss = CMPCLoss(10, 4)
    assert [p.shape for p in loss.parameters()] == [torch.Size([10, 4])]
