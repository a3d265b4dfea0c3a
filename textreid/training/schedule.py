"""Learning-rate schedules: linear warmup followed by cosine decay (or a constant rate).

The schedule is a pure function of the update index, :func:`lr_at`, so its values can be
tested in isolation; :func:`build_scheduler` wraps it in a :class:`torch.optim.lr_scheduler.LambdaLR`
that multiplies every parameter group's own base rate, which keeps per-module multipliers
(see :mod:`textreid.training.optim`) intact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from textreid._checks import check_choice, check_positive

__all__ = ["SCHEDULES", "build_scheduler", "lr_at"]

ScheduleName = Literal["cosine", "constant"]
SCHEDULES: tuple[ScheduleName, ...] = ("cosine", "constant")


def _check_schedule_args(
    fn: str, t: int, total: int, warmup: int, warmup_start_factor: float, schedule: str
) -> None:
    if t < 0:
        raise ValueError(f"{fn}: t must be >= 0, got {t}")
    check_positive(total, "total", fn)
    check_positive(warmup, "warmup", fn, allow_zero=True)
    if warmup >= total:
        raise ValueError(f"{fn}: warmup ({warmup}) must be smaller than total ({total})")
    check_positive(warmup_start_factor, "warmup_start_factor", fn, allow_zero=True)
    if warmup_start_factor > 1:
        raise ValueError(f"{fn}: warmup_start_factor must be <= 1, got {warmup_start_factor}")
    check_choice(schedule, "schedule", fn, SCHEDULES)


def lr_at(
    t: int,
    *,
    base_lr: float,
    total: int,
    warmup: int = 0,
    warmup_start_factor: float = 0.1,
    schedule: ScheduleName = "cosine",
) -> float:
    r"""Learning rate used during update period ``t`` (an epoch or a step, counted from 0).

    With warmup length :math:`W`, total length :math:`T` and start factor :math:`s`:

    .. math::

        \eta_t = \begin{cases}
            \eta \left(s (1 - t/W) + t/W\right) & t < W \\
            \eta \cdot \tfrac12\left(1 + \cos\left(\pi \frac{t - W}{T - W}\right)\right)
                & t \ge W,\ \text{cosine} \\
            \eta & t \ge W,\ \text{constant}
        \end{cases}

    This is the schedule of IRRA (Jiang and Ye, CVPR 2023, arXiv:2303.12501), stepped once per
    epoch: with ``base_lr=1e-5, total=60, warmup=5`` epoch 1 (``t=0``) uses ``1e-6``, epoch 6
    uses ``1e-5`` and epoch 60 uses about ``8.154e-9`` (the rate never reaches exactly 0).

    Args:
        t: update index, 0-based (epoch ``e`` of a per-epoch schedule is ``t = e - 1``).
        base_lr: peak learning rate :math:`\eta`.
        total: number of update periods :math:`T` (epochs, or optimizer steps).
        warmup: warmup periods :math:`W` (``0 <= W < T``).
        warmup_start_factor: :math:`s`, the fraction of ``base_lr`` at ``t = 0``.
        schedule: ``"cosine"`` or ``"constant"`` after the warmup.

    Returns:
        The learning rate (``base_lr`` times the schedule factor).

    Raises:
        ValueError: on a negative ``t``, non-positive ``total``, ``warmup >= total``, a start
            factor outside ``[0, 1]`` or an unknown ``schedule``.
    """
    _check_schedule_args("lr_at", t, total, warmup, warmup_start_factor, schedule)
    return base_lr * _factor(t, total, warmup, warmup_start_factor, schedule)


def _factor(t: int, total: int, warmup: int, start: float, schedule: str) -> float:
    if t < warmup:
        alpha = t / warmup
        return start * (1 - alpha) + alpha
    if schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


@dataclass
class _Factor:
    """Picklable schedule factor (LambdaLR stores a callable object's ``__dict__``)."""

    total: int
    warmup: int
    start: float
    schedule: str

    def __call__(self, t: int) -> float:
        return _factor(t, self.total, self.warmup, self.start, self.schedule)


def build_scheduler(
    optimizer: Optimizer,
    *,
    total: int,
    warmup: int = 0,
    warmup_start_factor: float = 0.1,
    schedule: ScheduleName = "cosine",
) -> LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` following :func:`lr_at` for every group.

    Each parameter group's rate at update ``t`` is its initial rate times the factor of
    :func:`lr_at`, so group multipliers are preserved. Call ``scheduler.step()`` once per
    update period (after each epoch for a per-epoch schedule, after each optimizer step for a
    per-step one); the rate at construction is that of ``t = 0``.

    Raises:
        ValueError: as :func:`lr_at`.
    """
    _check_schedule_args("build_scheduler", 0, total, warmup, warmup_start_factor, schedule)
    return LambdaLR(optimizer, _Factor(total, warmup, warmup_start_factor, schedule))
