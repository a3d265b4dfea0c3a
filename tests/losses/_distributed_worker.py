"""Run by ``torchrun --nproc_per_node 2`` from test_distributed.py (gloo, CPU).

Each rank holds half of a seeded batch, gathers it with gradient and computes the loss on the
full batch; rank 0 writes the loss and this rank's feature gradients to ``argv[1]``.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from textreid.losses import InfoNCELoss, SDMLoss, gather_features


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    v = torch.randn(8, 6, generator=g, dtype=torch.float64)
    t = torch.randn(8, 6, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 1, 2, 0, 3, 1, 4, 2])
    # Unequal shares (3 and 5 rows) exercise the padded gather.
    bounds = [(0, 3), (3, 8)][rank]
    results = {}
    for name, loss in (("sdm", SDMLoss()), ("infonce", InfoNCELoss())):
        lv = v[bounds[0] : bounds[1]].clone().requires_grad_(True)
        lt = t[bounds[0] : bounds[1]].clone().requires_grad_(True)
        av, at, ap = gather_features(lv, lt, pids[bounds[0] : bounds[1]])
        out = loss(av, at, ap)
        out.backward()
        assert lv.grad is not None
        assert lt.grad is not None
        grads_v = [torch.zeros(8, 6, dtype=torch.float64) for _ in range(world)]
        grads_t = [torch.zeros(8, 6, dtype=torch.float64) for _ in range(world)]
        full_v = torch.zeros(8, 6, dtype=torch.float64)
        full_t = torch.zeros(8, 6, dtype=torch.float64)
        full_v[bounds[0] : bounds[1]] = lv.grad
        full_t[bounds[0] : bounds[1]] = lt.grad
        dist.all_gather(grads_v, full_v)
        dist.all_gather(grads_t, full_t)
        results[name] = {
            "loss": out.detach(),
            "pids": ap,
            # DDP would average over ranks: divide the summed gradients by the world size.
            "grad_image": sum(grads_v) / world,
            "grad_text": sum(grads_t) / world,
        }
    if rank == 0:
        torch.save(results, sys.argv[1])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
