"""Time and memory of each global matching loss against a straightforward formulation.

Run by hand (not in CI): ``python benchmarks/losses.py [--sizes 64 128 ...] [--device cuda]``.
For every loss and batch size B (D = 512, B/4 identities) it times forward + backward (fastest
of ``--repeats`` runs, the least disturbed by other processes) and measures memory: the CUDA peak on a GPU, otherwise the bytes autograd
saves for backward (the part of the peak that grows with B). The "naive" column is the textbook
formulation: dense label matrices, separate softmax and log-softmax, and for the summed triplet
losses the full ``[B, B, B]`` tensor of all triplets (skipped above ``--max-cube``: at B = 1024
it needs several GiB).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from _machine import print_machine  # benchmarks/ is the script's folder
from torch import Tensor

from textreid.losses.functional import (
    cmpm_loss,
    id_loss,
    infonce_loss,
    sdm_loss,
    triplet_loss,
)

LossFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def _labels(pids: Tensor) -> Tensor:
    return (pids[:, None] == pids[None, :]).float()


def naive_sdm(v: Tensor, t: Tensor, pids: Tensor, w: Tensor) -> Tensor:
    y = _labels(pids)
    s = 50 * (v / v.norm(dim=1, keepdim=True)) @ (t / t.norm(dim=1, keepdim=True)).t()
    q = y / y.sum(dim=1, keepdim=True)
    i2t = F.softmax(s, 1) * (F.log_softmax(s, 1) - torch.log(q + 1e-8))
    t2i = F.softmax(s.t(), 1) * (F.log_softmax(s.t(), 1) - torch.log(q.t() + 1e-8))
    return i2t.sum(1).mean() + t2i.sum(1).mean()


def naive_infonce(v: Tensor, t: Tensor, pids: Tensor, w: Tensor) -> Tensor:
    y = _labels(pids)
    s = (v / v.norm(dim=1, keepdim=True)) @ (t / t.norm(dim=1, keepdim=True)).t() / 0.07
    target = y / y.sum(dim=1, keepdim=True)
    return 0.5 * (
        -(target * F.log_softmax(s, 1)).sum(1).mean()
        - (target * F.log_softmax(s.t(), 1)).sum(1).mean()
    )


def naive_cmpm(v: Tensor, t: Tensor, pids: Tensor, w: Tensor) -> Tensor:
    y = _labels(pids)
    q = y / y.norm(dim=1, keepdim=True)
    a = v @ (t / t.norm(dim=1, keepdim=True)).t()
    b = t @ (v / v.norm(dim=1, keepdim=True)).t()
    i2t = F.softmax(a, 1) * (F.log_softmax(a, 1) - torch.log(q + 1e-8))
    t2i = F.softmax(b, 1) * (F.log_softmax(b, 1) - torch.log(q + 1e-8))
    return i2t.sum(1).mean() + t2i.sum(1).mean()


def naive_id(v: Tensor, t: Tensor, pids: Tensor, w: Tensor) -> Tensor:
    return 0.5 * (F.cross_entropy(v @ w.t(), pids) + F.cross_entropy(t @ w.t(), pids))


def _naive_triplet(v: Tensor, t: Tensor, pids: Tensor, hardest: bool) -> Tensor:
    y = _labels(pids).bool()
    s = F.normalize(v, dim=1) @ F.normalize(t, dim=1).t()

    def direction(s: Tensor, y: Tensor) -> Tensor:
        # [anchor, positive, negative] hinge for every triplet.
        h = (0.2 - s[:, :, None] + s[:, None, :]).clamp_min(0)
        h = h * (y[:, :, None] & ~y[:, None, :])
        per_pos = h.amax(2) if hardest else h.sum(2)
        return ((per_pos * y).sum(1) / y.sum(1)).mean()

    return direction(s, y) + direction(s.t(), y.t())


LOSSES: dict[str, tuple[LossFn, LossFn]] = {
    "sdm": (lambda v, t, p, w: sdm_loss(v, t, p, logit_scale=50.0), naive_sdm),
    "infonce": (lambda v, t, p, w: infonce_loss(v, t, p), naive_infonce),
    "cmpm": (lambda v, t, p, w: cmpm_loss(v, t, p), naive_cmpm),
    "id": (lambda v, t, p, w: id_loss(v, t, p, weight=w), naive_id),
    "triplet_hardest": (
        lambda v, t, p, w: triplet_loss(v, t, p),
        lambda v, t, p, w: _naive_triplet(v, t, p, True),
    ),
    "triplet_sum": (
        lambda v, t, p, w: triplet_loss(v, t, p, mining="sum"),
        lambda v, t, p, w: _naive_triplet(v, t, p, False),
    ),
}


@contextmanager
def _saved_bytes(counter: list[int]) -> Iterator[None]:
    """Count the distinct storages autograd keeps for backward (shared ones once)."""
    seen: set[int] = set()

    def pack(x: Tensor) -> Tensor:
        ptr = x.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            counter[0] += x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        yield


def measure(fn: LossFn, b: int, device: torch.device, repeats: int) -> tuple[float, float, float]:
    """(fastest ms, memory MiB, loss value) of forward + backward."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(b, 512, generator=g).to(device).requires_grad_(True)
    t = torch.randn(b, 512, generator=g).to(device).requires_grad_(True)
    pids = torch.randint(0, max(1, b // 4), (b,), generator=g).to(device)
    w = (torch.randn(max(1, b // 4), 512, generator=g) * 0.05).to(device)
    times, mem, value = [], 0.0, 0.0
    for _ in range(repeats + 1):
        v.grad = t.grad = None
        counter = [0]
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with _saved_bytes(counter):
            loss = fn(v, t, pids, w)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
            mem = torch.cuda.max_memory_allocated() / 2**20
        else:
            mem = counter[0] / 2**20
        times.append((time.perf_counter() - start) * 1e3)
        value = loss.item()
    return min(times[1:]), mem, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES))
    parser.add_argument(
        "--max-cube", type=int, default=256, help="largest B for the naive B^3 triplet"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    mem_name = "peak MiB" if device.type == "cuda" else "saved MiB"
    print_machine()
    print(f"device={device}  D=512  ids=B/4  forward+backward, fastest of {args.repeats}")
    header = (
        f"{'loss':<16}{'B':>6}{'ms':>10}{'naive ms':>10}{mem_name:>11}{'naive':>9}{'|diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for name in args.losses:
        ours, naive = LOSSES[name]
        for b in args.sizes:
            ms, mem, val = measure(ours, b, device, args.repeats)
            if name.startswith("triplet") and b > args.max_cube:
                print(f"{name:<16}{b:>6}{ms:>10.2f}{'skipped':>10}{mem:>11.2f}{'-':>9}{'-':>10}")
                continue
            n_ms, n_mem, n_val = measure(naive, b, device, args.repeats)
            print(
                f"{name:<16}{b:>6}{ms:>10.2f}{n_ms:>10.2f}{mem:>11.2f}{n_mem:>9.2f}{abs(val - n_val):>10.2e}"
            )


if __name__ == "__main__":
    main()
