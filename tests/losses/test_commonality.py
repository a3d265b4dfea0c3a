"""CommonalityMarginRankingLoss (experimental): property tests and a loop reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from textreid.losses.commonality import CommonalityMarginRankingLoss, part_commonality


def _loop(
    v: torch.Tensor, t: torch.Tensor, pid: torch.Tensor, margins: torch.Tensor
) -> torch.Tensor:
    vn, tn = torch.nn.functional.normalize(v, dim=-1), torch.nn.functional.normalize(t, dim=-1)
    b, k, _ = v.shape
    total = torch.zeros((), dtype=v.dtype)
    for i in range(b):
        for p in range(k):
            pos = vn[i, p] @ tn[i, p]
            negs = [j for j in range(b) if pid[j] != pid[i]]
            hv = max((max(0.0, margins[p] - pos + vn[i, p] @ tn[j, p]) for j in negs), default=0.0)
            ht = max((max(0.0, margins[p] - pos + vn[j, p] @ tn[i, p]) for j in negs), default=0.0)
            total = total + (hv + ht) / k
    return total / b


def test_loop_reference() -> None:
    v, t = torch.randn(6, 3, 5, dtype=torch.float64), torch.randn(6, 3, 5, dtype=torch.float64)
    pid = torch.tensor([0, 0, 1, 2, 2, 3])
    loss = CommonalityMarginRankingLoss()
    c = part_commonality(v, t, pid, pid)
    torch.testing.assert_close(loss(v, t, pid), _loop(v, t, pid, loss.margins(c)))


@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6))
def test_margin_non_increasing_in_commonality(values: list[float]) -> None:
    c = torch.tensor(sorted(values), dtype=torch.float64)
    m = CommonalityMarginRankingLoss(margin=0.3, min_margin=0.05).margins(c)
    assert torch.all(m[1:] <= m[:-1])
    assert torch.all((m >= 0.05) & (m <= 0.3))


def test_zero_commonality_is_plain_ranking() -> None:
    v, t = torch.randn(5, 2, 4, dtype=torch.float64), torch.randn(5, 2, 4, dtype=torch.float64)
    pid = torch.arange(5)
    got = CommonalityMarginRankingLoss(margin=0.2)(
        v, t, pid, commonality=torch.zeros(2, dtype=torch.float64)
    )
    torch.testing.assert_close(got, _loop(v, t, pid, torch.full((2,), 0.2, dtype=torch.float64)))


def test_zero_when_positives_beat_negatives_by_the_margin() -> None:
    eye = torch.eye(4, dtype=torch.float64)
    parts = eye[:, None, :].repeat(1, 2, 1)  # positives cos 1, negatives cos 0
    out = CommonalityMarginRankingLoss(margin=0.5)(
        parts, parts.clone().requires_grad_(), torch.arange(4)
    )
    assert out.item() == 0.0
    assert out.requires_grad


def test_common_part_gets_smaller_loss() -> None:
    v, t = torch.randn(6, 2, 4, dtype=torch.float64), torch.randn(6, 2, 4, dtype=torch.float64)
    pid = torch.arange(6)
    loss = CommonalityMarginRankingLoss(negatives="all")
    low = loss(v, t, pid, commonality=torch.tensor([0.0, 0.0], dtype=torch.float64))
    high = loss(v, t, pid, commonality=torch.tensor([0.9, 0.9], dtype=torch.float64))
    assert high < low


def test_single_identity_and_gradients() -> None:
    v = torch.randn(3, 2, 4, requires_grad=True)
    t = torch.randn(3, 2, 4, requires_grad=True)
    out = CommonalityMarginRankingLoss()(v, t, torch.zeros(3, dtype=torch.long))
    assert out.item() == 0.0
    out.backward()
    v2, t2 = (
        torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True),
    )
    c = torch.tensor([0.1, 0.4], dtype=torch.float64)
    loss = CommonalityMarginRankingLoss(negatives="all")
    assert torch.autograd.gradcheck(
        lambda a, b: loss(a, b, torch.arange(4), commonality=c), (v2, t2)
    )


def test_errors() -> None:
    v = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match=r"min_margin 0\.5 exceeds margin 0\.2"):
        CommonalityMarginRankingLoss(min_margin=0.5)
    with pytest.raises(ValueError, match="same number of parts"):
        CommonalityMarginRankingLoss()(v, torch.randn(3, 3, 4))
    with pytest.raises(ValueError, match="commonality has 3 entries"):
        CommonalityMarginRankingLoss()(v, v, commonality=torch.zeros(3))
    with pytest.raises(ValueError, match="negatives must be one of"):
        CommonalityMarginRankingLoss(negatives="semi")
