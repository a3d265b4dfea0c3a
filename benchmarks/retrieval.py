"""Time and peak memory of textreid's exact retrieval against the usual alternatives.

Compared, per size ``NQxNG`` (queries x gallery, features of width ``--dim``):

- ``evaluate``: :func:`textreid.retrieval.evaluate` (ranks by counting, streamed).
- ``full-sort eval``: the IRRA-style evaluation written out below: full ``[Nq, Ng]`` similarity,
  full ``argsort``, match matrix, cumulative sums, and a per-query loop for mINP. Skipped where
  its matrices (about 40 bytes per query-gallery pair) would not fit in half the free memory.
- ``topk_search``: :func:`textreid.retrieval.topk_search` with ``k`` (default 10) and its
  default ``screen="auto"`` (the bfloat16 screen where the CPU has bfloat16 dot products).
- ``topk_search screen=off``: the same, every pair scored in float32.
- ``faiss IndexFlatIP``: exact inner-product search with faiss, when installed.
- ``topk_search gaussian`` / ``evaluate gaussian``: the same through
  :class:`textreid.retrieval.GaussianScorer` (default distance ``"csd"``), with the features as
  means and small random log-variances: the dense chunked path every non-cosine scorer takes
  (no bfloat16 screen), plus the uncertainties of the queries and hits.
- ``topk_search parts``: :class:`textreid.retrieval.PartScorer` with the features as the
  global embedding and 6 parts of width ``--dim`` (random, so only the cost is meaningful).

Memory method: every measurement runs in a fresh child process, which builds its inputs,
then resets the kernel's RSS high-water mark (writing ``5`` to ``/proc/self/clear_refs``) and
records the resident set; the reported peak is ``VmHWM`` after the call minus that baseline,
i.e. the extra memory the method needed beyond its inputs, torch and faiss allocations
included (Python's tracemalloc does not see them). Where ``clear_refs`` is unavailable the
process-lifetime ``ru_maxrss`` is used instead (an upper bound).

Run by hand, e.g.::

    python benchmarks/retrieval.py                       # CUHK-PEDES test size and 10k x 200k
    python benchmarks/retrieval.py --sizes 6148x3074 100000x1000000 --threads 16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from textreid.retrieval import GaussianScorer, PartScorer, evaluate, topk_search
from textreid.retrieval.screening import native_bf16

METHODS = (
    "evaluate",
    "full-sort eval",
    "topk_search",
    "topk_search screen=off",
    "faiss IndexFlatIP",
    "topk_search gaussian",
    "evaluate gaussian",
    "topk_search parts",
)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _inputs(nq: int, ng: int, dim: int, device: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Three gallery items per id; each query describes a random id; features = prototype
    + noise, so the metrics are in the range of real TIPR models."""
    gen = torch.Generator().manual_seed(0)
    n_ids = max(ng // 3, 1)
    gpid = torch.arange(ng) % n_ids
    qpid = torch.randint(0, n_ids, (nq,), generator=gen)
    protos = torch.randn(n_ids, dim, generator=gen)
    g = protos[gpid].add_(torch.randn(ng, dim, generator=gen), alpha=2.5)
    q = protos[qpid].add_(torch.randn(nq, dim, generator=gen), alpha=2.5)
    del protos
    return q.to(device), g.to(device), qpid.to(device), gpid.to(device)


def _gaussian(x: Tensor) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(1)
    log_var = torch.randn(x.shape, generator=gen).mul_(0.1).sub_(5.0).to(x.device)
    return {"mean": F.normalize(x, dim=1), "log_var": log_var}


def _parts(x: Tensor) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(2)
    parts = torch.randn(x.shape[0], 6, x.shape[1], generator=gen).to(x.device)
    return {"global": x, "parts": parts}


def _full_sort_eval(q: Tensor, g: Tensor, qpid: Tensor, gpid: Tensor) -> dict[str, float]:
    """IRRA's evaluation, as its papers' code does it (full matrix, full argsort)."""
    sim = F.normalize(q, dim=1) @ F.normalize(g, dim=1).T
    indices = torch.argsort(sim, dim=1, descending=True)
    matches = gpid[indices] == qpid.view(-1, 1)
    cmc = matches[:, :10].cumsum(1).clamp(max=1).float().mean(0) * 100
    num_rel = matches.sum(1)
    tmp = matches.cumsum(1)
    inp = [tmp[i][row.nonzero()[-1]] / (row.nonzero()[-1] + 1.0) for i, row in enumerate(matches)]
    m_inp = torch.cat(inp).mean() * 100
    prec = tmp / torch.arange(1, tmp.shape[1] + 1, device=tmp.device) * matches
    m_ap = (prec.sum(1) / num_rel).mean() * 100
    return {
        "R1": float(cmc[0]),
        "R5": float(cmc[4]),
        "R10": float(cmc[9]),
        "mAP": float(m_ap),
        "mINP": float(m_inp),
    }


def _child(method: str, nq: int, ng: int, dim: int, k: int, device: str) -> dict[str, Any]:
    q, g, qpid, gpid = _inputs(nq, ng, dim, device)
    if method == "faiss IndexFlatIP":
        import faiss

        qn = F.normalize(q, dim=1).cpu().numpy()
        gn = F.normalize(g, dim=1).cpu().numpy()
        del q, g
    # A scorer's features are the model's output: built before the measurement starts.
    qf: dict[str, Tensor] = {}
    gf: dict[str, Tensor] = {}
    if method.endswith(("gaussian", "parts")):
        make = _gaussian if method.endswith("gaussian") else _parts
        qf, gf = make(q), make(g)
    exact = _reset_peak()
    base = _status_kb("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result: dict[str, Any]
    if method == "evaluate":
        result = evaluate(q, g, query_pids=qpid, gallery_pids=gpid).to_dict()
    elif method == "full-sort eval":
        result = _full_sort_eval(q, g, qpid, gpid)
    elif method.endswith("gaussian"):
        if method.startswith("evaluate"):
            result = evaluate(
                qf, gf, query_pids=qpid, gallery_pids=gpid, scorer=GaussianScorer()
            ).to_dict()
        else:
            hits = topk_search(qf, gf, k, scorer=GaussianScorer())
            result = {"indices": hits.indices[:200].tolist()}
    elif method.endswith("parts"):
        hits = topk_search(qf, gf, k, scorer=PartScorer())
        result = {"indices": hits.indices[:200].tolist()}
    elif method.startswith("topk_search"):
        hits = topk_search(q, g, k, normalize=True, screen="off" if "off" in method else "auto")
        result = {"indices": hits.indices[:200].tolist()}
    else:
        index = faiss.IndexFlatIP(gn.shape[1])
        index.add(gn)
        _, idx = index.search(qn, k)
        result = {"indices": idx[:200].tolist()}
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    extra_mb = (peak_kb - base) / 1024
    if device == "cuda":
        extra_mb = torch.cuda.max_memory_allocated() / 2**20
    return {"seconds": seconds, "peak_mb": extra_mb, "exact_peak": exact, "result": result}


def _fits(nq: int, ng: int) -> bool:
    free_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemAvailable:")
    )
    return nq * ng * 40 < free_kb * 1024 / 2


def _run(method: str, nq: int, ng: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", method, f"{nq}x{ng}", "--dim", str(args.dim)]
    cmd += ["--k", str(args.k), "--threads", str(args.threads), "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    parsed: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return parsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["6148x3074", "10000x200000"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the fastest is shown")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    default = [m for m in METHODS if not m.endswith(("gaussian", "parts"))]
    ap.add_argument("--methods", nargs="+", default=default, choices=METHODS)
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.child:
        nq, ng = (int(v) for v in args.child[1].split("x"))
        print(json.dumps(_child(args.child[0], nq, ng, args.dim, args.k, args.device)))
        return

    try:
        import faiss  # noqa: F401

        have_faiss = True
    except ImportError:
        have_faiss = False
    screen = "on" if args.device == "cpu" and native_bf16() else "off"
    print(
        f"torch {torch.__version__}, {args.threads} threads, device {args.device}, "
        f"D={args.dim}, k={args.k}, bfloat16 screen under screen='auto': {screen}"
    )
    print("| size (Nq x Ng) | method | time (s) | peak extra memory (MiB) | check |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        nq, ng = (int(v) for v in size.split("x"))
        rows: dict[str, dict[str, Any]] = {}
        for method in args.methods:
            if method == "full-sort eval" and not _fits(nq, ng):
                print(
                    f"| {nq} x {ng} | {method} | skipped: needs ~{nq * ng * 40 / 2**30:.0f} GiB | | |"
                )
                continue
            if method == "faiss IndexFlatIP" and (not have_faiss or args.device != "cpu"):
                continue
            runs = [_run(method, nq, ng, args) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_mb"] = max(r["peak_mb"] for r in runs)
            rows[method] = best
            check = ""
            if method == "full-sort eval" and "evaluate" in rows:
                ours, ref = rows["evaluate"]["result"], best["result"]
                same = all(f"{ours[key]:.3f}" == f"{ref[key]:.3f}" for key in ref)
                speed = best["seconds"] / rows["evaluate"]["seconds"]
                check = f"same numbers: {same}; evaluate is {speed:.1f}x faster"
            if method in ("faiss IndexFlatIP", "topk_search screen=off") and "topk_search" in rows:
                a, b = rows["topk_search"]["result"]["indices"], best["result"]["indices"]
                agree = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb))
                total = sum(len(r) for r in a)
                ratio = rows["topk_search"]["seconds"] / best["seconds"]
                check = f"hits agree {agree}/{total}; topk_search/this time ratio {ratio:.2f}"
            if method in ("evaluate", "evaluate gaussian"):
                r = best["result"]
                check = f"R1 {r['R1']:.2f} mAP {r['mAP']:.2f} mINP {r['mINP']:.2f}"
            peak = best["peak_mb"]
            mem = f"{peak:.0f}" if math.isfinite(peak) else "?"
            print(
                f"| {nq} x {ng} | {method} | {best['seconds']:.3f} | {mem} | {check} |", flush=True
            )


if __name__ == "__main__":
    main()
