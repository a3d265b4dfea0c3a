"""lr schedule values (IRRA parity), scheduler stepping and argument errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from textreid.training import build_scheduler, lr_at

# Base lr of epochs 1..60 from IRRA's LRSchedulerWithWarmup (solver/lr_scheduler.py) run with
# lr 1e-5, warmup_factor 0.1, warmup_epochs 5, num_epoch 60, cosine, target_lr 0, stepped once
# after every epoch.
IRRA_LR_PER_EPOCH = [
    1.0000000000000002e-06, 2.8000000000000003e-06, 4.600000000000001e-06, 6.4000000000000006e-06,
    8.200000000000001e-06, 1e-05, 9.991845519630679e-06, 9.96740867674275e-06,
    9.926769179238467e-06, 9.870059584711668e-06, 9.797464868072489e-06, 9.709221818197626e-06,
    9.60561826557425e-06, 9.486992143456792e-06, 9.353730385598887e-06, 9.206267664155906e-06,
    9.045084971874738e-06, 8.870708053195414e-06, 8.683705689382025e-06, 8.48468784327647e-06,
    8.274303669726427e-06, 8.053239398177191e-06, 7.822216094333847e-06, 7.5819873081948105e-06,
    7.333336616128369e-06, 7.0770750650094335e-06, 6.814038526753205e-06, 6.545084971874738e-06,
    6.271091670967437e-06, 5.9929523332287275e-06, 5.711574191366427e-06, 5.4278750423942e-06,
    5.142780253968481e-06, 4.85721974603152e-06, 4.572124957605803e-06, 4.2884258086335755e-06,
    4.007047666771274e-06, 3.7289083290325668e-06, 3.4549150281252635e-06, 3.1859614732467957e-06,
    2.9229249349905686e-06, 2.6666633838716317e-06, 2.418012691805191e-06, 2.1777839056661555e-06,
    1.946760601822809e-06, 1.7256963302735752e-06, 1.5153121567235334e-06, 1.3162943106179748e-06,
    1.1292919468045876e-06, 9.549150281252633e-07, 7.937323358440935e-07, 6.462696144011149e-07,
    5.130078565432089e-07, 3.9438173442575e-07, 2.9077818180237693e-07, 2.0253513192751374e-07,
    1.2994041528833267e-07, 7.32308207615351e-08, 3.25913232572489e-08, 8.15448036932176e-09,
]  # fmt: skip

IRRA = {"base_lr": 1e-5, "total": 60, "warmup": 5, "warmup_start_factor": 0.1}


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(1, 1e-6), (2, 2.8e-6), (3, 4.6e-6), (4, 6.4e-6), (5, 8.2e-6), (6, 1e-5), (7, 9.99e-6),
     (10, 9.87e-6), (20, 8.485e-6), (30, 5.993e-6), (40, 3.186e-6), (50, 9.549e-7),
     (55, 2.908e-7), (59, 3.259e-8), (60, 8.154e-9)],
)  # fmt: skip
def test_irra_published_per_epoch_values(epoch: int, expected: float) -> None:
    assert lr_at(epoch - 1, **IRRA) == pytest.approx(expected, rel=5e-4)


def test_matches_irra_reference_every_epoch() -> None:
    ours = [lr_at(e, **IRRA) for e in range(60)]
    assert ours == pytest.approx(IRRA_LR_PER_EPOCH, rel=1e-12, abs=0)


def test_hand_computed_formula() -> None:
    assert lr_at(2, base_lr=2.0, total=10, warmup=4, warmup_start_factor=0.2) == pytest.approx(
        2.0 * (0.2 * 0.5 + 0.5)
    )
    after = lr_at(7, base_lr=2.0, total=10, warmup=4)
    assert after == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert lr_at(0, base_lr=3.0, total=5) == 3.0  # no warmup: cosine starts at the peak
    assert lr_at(9, base_lr=3.0, total=10, warmup=2, schedule="constant") == 3.0


@given(
    total=st.integers(2, 200),
    warm_frac=st.floats(0, 0.99),
    start=st.floats(0, 1),
)
def test_shape_of_schedule(total: int, warm_frac: float, start: float) -> None:
    warmup = int(warm_frac * (total - 1))
    lrs = [lr_at(t, base_lr=1.0, total=total, warmup=warmup, warmup_start_factor=start)
           for t in range(total)]  # fmt: skip
    assert all(0 <= x <= 1 + 1e-12 for x in lrs)
    # Only the very first warmup step may be 0 (warmup_start_factor=0) and only the last
    # cosine step may reach 0.
    assert all(x > 0 for x in lrs[1:-1])
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(lrs[: warmup + 1]))
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(lrs[warmup:]))
    assert lrs[warmup] == pytest.approx(1.0)


def test_scheduler_keeps_group_multipliers() -> None:
    w1, w2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w1], "lr": 1e-5}, {"params": [w2], "lr": 5e-5}], lr=1e-5)
    sched = build_scheduler(opt, total=60, warmup=5, warmup_start_factor=0.1)
    seen = []
    for _ in range(60):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        opt.step()
        sched.step()
    assert [a for a, _ in seen] == pytest.approx(IRRA_LR_PER_EPOCH, rel=1e-12)
    assert [b for _, b in seen] == pytest.approx([5 * x for x in IRRA_LR_PER_EPOCH], rel=1e-12)


def test_scheduler_state_round_trip() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, total=10, warmup=3)
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = build_scheduler(opt2, total=10, warmup=3)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(lr_at(5, base_lr=1.0, total=10, warmup=3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t": -1}, "t must be >= 0"),
        ({"total": 0}, "total must be > 0"),
        ({"warmup": 10}, r"warmup \(10\) must be smaller than total \(10\)"),
        ({"warmup": -1}, "warmup must be >= 0"),
        ({"warmup_start_factor": 1.5}, "warmup_start_factor must be <= 1"),
        ({"warmup_start_factor": -0.1}, "warmup_start_factor must be >= 0"),
        ({"schedule": "linear"}, "schedule must be one of"),
    ],
)
def test_errors(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"t": 0, "base_lr": 1.0, "total": 10, "warmup": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"lr_at: {match}"):
        lr_at(**args)  # type: ignore[arg-type]


def test_build_scheduler_validates() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="build_scheduler: warmup"):
        build_scheduler(opt, total=3, warmup=3)
