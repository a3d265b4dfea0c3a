"""Peak memory of SparseTokenSimilarity, chunked versus unchunked, as the batch grows.

Each configuration runs in a fresh subprocess; the peak is the growth of the process's maximum
resident set size over its value after the inputs were built (CPU). Usage::

    python benchmarks/token_similarity.py [--batches 8 16 32 48] [--dim 256]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

from _machine import print_machine  # benchmarks/ is the script's folder


def _child(batch: int, dim: int, chunk: int | None, grad: bool) -> None:
    import torch

    from textreid.heads.token_similarity import SparseTokenSimilarity

    torch.manual_seed(0)
    torch.set_num_threads(1)
    img = torch.randn(batch, 193, dim, requires_grad=grad)
    txt = torch.randn(batch, 77, dim, requires_grad=grad)
    head = SparseTokenSimilarity(chunk_size=chunk, include_padding=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.set_grad_enabled(grad):
        out = head(img, txt)
        if grad:
            out.sum().backward()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(f"{peak / 1024:.1f} {elapsed:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 48])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        b, d, c, g = args.child
        _child(int(b), int(d), None if c == "none" else int(c), g == "1")
        return
    print_machine()
    print(f"L=77, P=193, D={args.dim}; peak RSS growth in MiB (seconds)")
    print("| B | naive [B,B,L,P] f32 MiB | unchunked fwd | chunked fwd | chunked fwd+bwd |")
    print("|---|---|---|---|---|")
    for b in args.batches:
        cells = []
        for chunk, grad in (("none", "0"), (str(args.chunk), "0"), (str(args.chunk), "1")):
            cmd = [sys.executable, __file__, "--child", str(b), str(args.dim), chunk, grad]
            mib, sec = subprocess.run(
                cmd, capture_output=True, text=True, check=True
            ).stdout.split()
            cells.append(f"{mib} ({sec})")
        naive = b * b * 77 * 193 * 4 / 2**20
        print(f"| {b} | {naive:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
