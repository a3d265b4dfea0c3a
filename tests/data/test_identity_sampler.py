"""IdentitySampler: P x K batch structure, determinism, coverage, distributed slicing."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from textreid.data import IdentitySampler


def _batches(sampler: IdentitySampler) -> list[list[int]]:
    idx = list(sampler)
    b = sampler.batch_size
    assert len(idx) % b == 0
    return [idx[i : i + b] for i in range(0, len(idx), b)]


def _check_pk(batches: list[list[int]], pids: list[int], p: int, k: int) -> None:
    for batch in batches:
        counts = Counter(pids[i] for i in batch)
        assert len(counts) == p
        assert set(counts.values()) == {k}


def test_fixed_order_hand_checked() -> None:
    pids = [0, 0, 1, 1, 2, 2, 3, 3]
    s = IdentitySampler(pids, batch_size=4, num_instances=2, shuffle=False)
    assert _batches(s) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # an identity with one sample is topped up by repeating it
    s = IdentitySampler([5, 6, 6], batch_size=4, num_instances=2, shuffle=False)
    assert _batches(s) == [[0, 0, 1, 2]]


@given(
    pids=st.lists(st.integers(0, 12), min_size=1, max_size=80),
    k=st.integers(1, 4),
    p=st.integers(1, 4),
    seed=st.integers(0, 3),
)
def test_pk_structure_property(pids: list[int], k: int, p: int, seed: int) -> None:
    if len(set(pids)) < p:
        with pytest.raises(ValueError, match="distinct identities"):
            IdentitySampler(pids, batch_size=p * k, num_instances=k)
        return
    s = IdentitySampler(pids, batch_size=p * k, num_instances=k, seed=seed)
    batches = _batches(s)
    assert batches
    assert len(s) == sum(map(len, batches))
    _check_pk(batches, pids, p, k)
    assert all(0 <= i < len(pids) for b in batches for i in b)


def test_determinism_and_epochs() -> None:
    pids = [i // 5 for i in range(100)]
    a = IdentitySampler(pids, 16, 4, seed=3)
    b = IdentitySampler(torch.tensor(pids), 16, 4, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(IdentitySampler(pids, 16, 4, seed=4)) != first


def test_covers_every_sample_once_when_divisible() -> None:
    pids = [i % 12 for i in range(48)]  # 12 ids x 4 samples, P = 3 divides 12
    s = IdentitySampler(pids, 12, 4, seed=1)
    assert sorted(s) == list(range(48))
    _check_pk(_batches(s), pids, 3, 4)


def test_distributed_ranks() -> None:
    pids = [i // 4 for i in range(40)]  # 10 ids -> 5 global batches of 2 ids x 4
    full = _batches(IdentitySampler(pids, 8, 4, seed=2))
    assert len(full) == 5
    ranks = [IdentitySampler(pids, 8, 4, seed=2, num_replicas=2, rank=r) for r in (0, 1)]
    per = [_batches(r) for r in ranks]
    assert len(per[0]) == len(per[1]) == 3 == len(ranks[0]) // 8
    assert per[0] == [full[0], full[2], full[4]]
    assert per[1] == [full[1], full[3], full[0]]  # padded by wrapping around


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"pids": [], "batch_size": 4}, "pids is empty"),
        (
            {"pids": [0, 1], "batch_size": 6, "num_instances": 4},
            r"batch_size \(6\) must be a multiple",
        ),
        ({"pids": [0, 1], "batch_size": 0}, "batch_size must be > 0"),
        ({"pids": [0, 1], "batch_size": 4, "num_instances": 0}, "num_instances must be > 0"),
        ({"pids": [0, 1], "batch_size": 12, "num_instances": 4}, "needs 3 distinct identities"),
        (
            {"pids": [0, 1], "batch_size": 4, "num_instances": 2, "rank": 2, "num_replicas": 2},
            "rank must be in 0..1",
        ),
    ],
)
def test_errors(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        IdentitySampler(**kwargs)  # type: ignore[arg-type]
