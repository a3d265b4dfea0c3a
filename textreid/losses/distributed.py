"""Gather features across ``torch.distributed`` ranks, keeping the gradient.

Contrastive and distribution-matching losses see more negatives when every rank scores its
rows against the whole global batch. :func:`gather_with_grad` concatenates the rows of all
ranks and routes gradients back to the rank that owns each row.

Scaling: suppose each of ``W`` ranks computes the *same* loss ``L`` on the full gathered batch.
The backward of the gather sums (all-reduce SUM) the gradient that every rank's copy of ``L``
sends to this rank's rows, so this rank receives ``W · ∂L/∂x_r``. DDP then *averages*
parameter gradients over the ``W`` ranks, which cancels the factor ``W``:
``(1/W) Σ_r W · ∂L/∂x_r · ∂x_r/∂θ = ∂L/∂θ``, exactly the single-process gradient of ``L`` on
the concatenated batch. (Without DDP's averaging, divide the loss by ``W`` yourself.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from textreid._checks import check_tensor

__all__ = ["gather_features", "gather_with_grad", "is_distributed"]


def is_distributed() -> bool:
    """``True`` inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather_rows(x: Tensor) -> tuple[Tensor, list[int]]:
    """Concatenate the rows of every rank (row counts may differ); also return the counts."""
    world = dist.get_world_size()
    count = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0), sizes


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        gathered, sizes = _all_gather_rows(x)
        rank = dist.get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return gathered

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # all_reduce works in place: never write into the gradient autograd handed us.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop]


def gather_with_grad(x: Tensor) -> Tensor:
    """All ranks' rows of ``x [B_r, ...]`` concatenated in rank order, with gradient.

    Forward: ``all_gather`` then concatenate (``[Σ_r B_r, ...]``; ranks may hold different row
    counts). Backward: the incoming gradient is summed over ranks (all-reduce SUM) and this
    rank's slice is returned; see the module docstring for why that gives the single-process
    gradient under DDP's averaging.

    Outside an initialised process group (or with one rank) ``x`` itself is returned (no copy).

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``x`` is 0-D.
    """
    check_tensor(x, "x", "gather_with_grad", allow_empty=True)
    if x.dim() == 0:
        raise ValueError("gather_with_grad: x must have a row dimension, got a 0-D tensor")
    if not is_distributed():
        return x
    out: Tensor = _GatherWithGrad.apply(x)
    return out


def _gather_keep_local(x: Tensor) -> Tensor:
    """Gather without a gradient path to other ranks, keeping this rank's rows in the graph."""
    gathered, sizes = _all_gather_rows(x.detach())
    rank = dist.get_rank()
    start = sum(sizes[:rank])
    return torch.cat([gathered[:start], x, gathered[start + sizes[rank] :]], dim=0)


def gather_features(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None = None,
    *,
    with_grad: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gather image features, text features and ids of every rank.

    Args:
        image_feats: ``[B_r, D]`` this rank's image rows.
        text_feats: ``[B_r', D]`` this rank's text rows.
        pids: ``[B_r]`` ids (gathered without gradient) or ``None``.
        with_grad: ``True``: :func:`gather_with_grad` for both feature tensors. ``False``: other
            ranks' rows are constants and only this rank's rows carry gradient (open_clip's
            cheaper ``gather_with_grad=False`` mode; the gradient then misses the terms other
            ranks compute, so it is *not* the single-process gradient).

    Returns:
        ``(image_feats [Σ B_r, D], text_feats [Σ B_r', D], pids [Σ B_r] or None)``; the inputs
        themselves (no copy) outside an initialised process group.

    Raises:
        TypeError: a non-tensor argument.
    """
    fn = "gather_features"
    check_tensor(image_feats, "image_feats", fn, allow_empty=True)
    check_tensor(text_feats, "text_feats", fn, allow_empty=True)
    if pids is not None:
        check_tensor(pids, "pids", fn, kind="int", allow_empty=True)
    if not is_distributed():
        return image_feats, text_feats, pids
    gather = gather_with_grad if with_grad else _gather_keep_local
    all_pids = None if pids is None else _all_gather_rows(pids)[0]
    return gather(image_feats), gather(text_feats), all_pids
