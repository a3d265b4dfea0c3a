"""Multi-process training helpers for ``torchrun`` (NCCL on GPUs, gloo on CPU).

Launch with ``torchrun --nproc_per_node N script.py``; :func:`init_distributed` reads the
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` variables torchrun sets and is a no-op in a plain
single process. Methods that need the world size (for example to gather features across
ranks in a contrastive loss, see ``textreid.losses.distributed``) call :func:`get_world_size`
and :func:`get_rank` at forward time; both answer 1 and 0 when no process group exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "DistInfo",
    "barrier",
    "broadcast_object",
    "cleanup",
    "distributed_sampler",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global ``rank``, ``world_size`` and ``local_rank`` (GPU index)."""

    rank: int
    world_size: int
    local_rank: int


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"init_distributed: environment variable {name} must be an integer, got {raw!r}"
        ) from None


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Idempotent: an existing default process group is reused. Without ``WORLD_SIZE`` (or with
    ``WORLD_SIZE=1``) nothing is initialised and ``DistInfo(0, 1, 0)`` is returned.

    Args:
        backend: ``"nccl"``, ``"gloo"``, ...; default NCCL when CUDA is available, else gloo.
            With CUDA, the current device is set to ``LOCAL_RANK``.

    Raises:
        ValueError: when ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` are not integers or are
            inconsistent.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(
            f"init_distributed: inconsistent environment RANK={rank}, WORLD_SIZE={world_size}, "
            f"LOCAL_RANK={local_rank}"
        )
    if world_size == 1:
        return DistInfo(0, 1, 0)
    if not dist.is_available():
        raise RuntimeError("init_distributed: WORLD_SIZE > 1 but torch.distributed is unavailable")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available() and backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    return dist.get_world_size() if _active() else 1


def get_rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single process)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if _active():
        dist.barrier()


def cleanup() -> None:
    """Destroy the default process group if one exists."""
    if _active():
        dist.destroy_process_group()


def broadcast_object(obj: _T, src: int = 0) -> _T:
    """Send a picklable object from rank ``src`` to every rank and return it everywhere."""
    if not _active() or get_world_size() == 1:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    result: _T = box[0]
    return result


def distributed_sampler(
    dataset: Dataset[_T_co], *, shuffle: bool = True, seed: int = 0, drop_last: bool = False
) -> DistributedSampler[_T_co] | None:
    """A :class:`~torch.utils.data.DistributedSampler` when running with more than one rank.

    Returns ``None`` in a single process, so the call site can write
    ``DataLoader(ds, sampler=s, shuffle=s is None and shuffle, ...)``. The Trainer calls
    ``set_epoch`` on any sampler (or batch sampler) that has one, so every epoch reshuffles
    identically on all ranks and a resumed run reproduces the same order.
    """
    if get_world_size() == 1:
        return None
    return DistributedSampler(
        dataset,
        num_replicas=get_world_size(),
        rank=get_rank(),
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
