"""Identity-balanced P x K sampling for training with identity-aware losses."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from textreid._checks import check_positive

__all__ = ["IdentitySampler"]


class IdentitySampler(Sampler[int]):
    """Yield dataset indices in batches of P identities x K instances (P = batch_size // K).

    The scheme of IRRA's / IVT's ``RandomIdentitySampler``: each identity's sample indices are
    shuffled (an identity with fewer than K samples is topped up by drawing its samples again
    with replacement), cut into groups of K (a remainder shorter than K is dropped), and
    batches are formed by drawing P distinct identities that still have groups and taking one
    group from each, until fewer than P identities have groups left. Use it with a
    ``DataLoader`` whose ``batch_size`` equals this ``batch_size`` so batches line up.

    The order depends only on ``(seed, epoch)``: call :meth:`set_epoch` at the start of every
    epoch for a new order. With ``num_replicas > 1`` (distributed training; pass the same
    ``seed`` on every rank) all ranks build the same global list of batches, pad it by
    wrapping around to a multiple of ``num_replicas`` batches, and rank ``r`` takes batches
    ``r, r + num_replicas, ...``; every rank then yields the same number of indices and
    ``batch_size`` is the per-rank batch size.

    Args:
        pids: person id of each dataset sample, length N (one per caption in a train set).
        batch_size: indices per batch (per rank); a multiple of ``num_instances``.
        num_instances: K, samples per identity in a batch.
        seed: base seed of the shuffling.
        shuffle: False gives a fixed order (identities in sorted order, samples in index order).
        num_replicas: number of distributed ranks (1 = not distributed).
        rank: this process's rank in ``0..num_replicas-1``.

    Raises:
        ValueError: ``pids`` empty, ``batch_size`` not a positive multiple of
            ``num_instances``, fewer than P distinct identities, or a bad ``rank``.
    """

    def __init__(
        self,
        pids: Sequence[int] | torch.Tensor,
        batch_size: int,
        num_instances: int = 4,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        fn = "IdentitySampler"
        ids = [int(p) for p in (pids.tolist() if isinstance(pids, torch.Tensor) else pids)]
        if not ids:
            raise ValueError(f"{fn}: pids is empty")
        check_positive(num_instances, "num_instances", fn)
        check_positive(batch_size, "batch_size", fn)
        check_positive(num_replicas, "num_replicas", fn)
        if batch_size % num_instances:
            raise ValueError(
                f"{fn}: batch_size ({batch_size}) must be a multiple of num_instances "
                f"({num_instances})"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"{fn}: rank must be in 0..{num_replicas - 1}, got {rank}")
        self.index_by_pid: dict[int, list[int]] = {}
        for index, pid in enumerate(ids):
            self.index_by_pid.setdefault(pid, []).append(index)
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.pids_per_batch = batch_size // num_instances
        if len(self.index_by_pid) < self.pids_per_batch:
            raise ValueError(
                f"{fn}: a batch needs {self.pids_per_batch} distinct identities "
                f"(batch_size {batch_size} / num_instances {num_instances}) but pids has only "
                f"{len(self.index_by_pid)}"
            )
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._cache: tuple[int, list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling of ``epoch`` (call before iterating each epoch)."""
        self.epoch = int(epoch)

    def _global_batches(self) -> list[list[int]]:
        rng = random.Random(f"textreid.IdentitySampler:{self.seed}:{self.epoch}")
        k = self.num_instances
        groups: dict[int, list[list[int]]] = {}
        for pid in sorted(self.index_by_pid):
            idxs = list(self.index_by_pid[pid])
            if len(idxs) < k:
                extra = k - len(idxs)
                idxs += rng.choices(idxs, k=extra) if self.shuffle else idxs * extra
                idxs = idxs[:k]
            if self.shuffle:
                rng.shuffle(idxs)
            groups[pid] = [idxs[i : i + k] for i in range(0, len(idxs) - k + 1, k)]
        available = sorted(groups)
        batches: list[list[int]] = []
        while len(available) >= self.pids_per_batch:
            if self.shuffle:
                chosen = rng.sample(available, self.pids_per_batch)
            else:
                chosen = available[: self.pids_per_batch]
            batch: list[int] = []
            for pid in chosen:
                batch.extend(groups[pid].pop(0))
                if not groups[pid]:
                    available.remove(pid)
            batches.append(batch)
        return batches

    def _indices(self) -> list[int]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self._global_batches()
        if self.num_replicas > 1:
            per_rank = -(-len(batches) // self.num_replicas)
            total = per_rank * self.num_replicas
            padded = [batches[i % len(batches)] for i in range(total)]
            batches = padded[self.rank :: self.num_replicas]
        indices = [i for batch in batches for i in batch]
        self._cache = (self.epoch, indices)
        return indices

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        """Exact number of indices this rank yields in the current epoch."""
        return len(self._indices())
