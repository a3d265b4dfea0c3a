"""Time and peak memory of textreid's exact retrieval against the usual alternatives.

Compared, per size ``NQxNG`` (queries x gallery, features of width ``--dim``):

- ``evaluate``: :func:`textreid.retrieval.evaluate` (ranks by counting, streamed).
- ``IRRA rank``: IRRA's evaluation as its code runs it (``Evaluator.eval``: normalised
  features, one similarity matmul, then ``utils/metrics.py::rank`` verbatim: full ``argsort``,
  the per-query ``nonzero`` loop for mINP, the per-column list for AP).
- ``bare GEMM``: ``torch.mm`` of the already normalised features, nothing else: the floor
  any exact method pays with torch's BLAS.
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

Timing: ``--repeat`` rounds, each running every method once in turn (interleaved, so load
from other processes hits every method alike); the table shows the median of the rounds and
ratios of medians. ``--avx2`` reruns everything with ``ATEN_CPU_CAPABILITY=avx2`` and
``ONEDNN_MAX_CPU_ISA=AVX2`` (torch's and oneDNN's AVX2 kernels, no bfloat16 screen), as a
CPU without AVX-512 runs; ``--busy N`` keeps N other processes doing a one-thread matmul
loop during the measurements (a shared machine).

Run by hand, e.g.::

    python benchmarks/retrieval.py                       # CUHK-PEDES test size and 10k x 200k
    python benchmarks/retrieval.py --sizes 6148x3074 --threads 2 --avx2 --busy 1
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
from _machine import print_machine  # benchmarks/ is the script's folder
from torch import Tensor

from textreid.retrieval import GaussianScorer, PartScorer, evaluate, topk_search
from textreid.retrieval.screening import native_bf16

METHODS = (
    "evaluate",
    "IRRA rank",
    "bare GEMM",
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


def _irra_rank(
    similarity: Tensor, q_pids: Tensor, g_pids: Tensor, max_rank: int = 10
) -> tuple[Tensor, Tensor, Tensor]:
    """IRRA's ``utils/metrics.py::rank`` (get_mAP=True), verbatim but for names."""
    indices = torch.argsort(similarity, dim=1, descending=True)
    pred_labels = g_pids[indices.cpu()]
    matches = pred_labels.eq(q_pids.view(-1, 1))
    all_cmc = matches[:, :max_rank].cumsum(1)
    all_cmc[all_cmc > 1] = 1
    all_cmc = all_cmc.float().mean(0) * 100
    num_rel = matches.sum(1)
    tmp_cmc = matches.cumsum(1)
    inp = [
        tmp_cmc[i][match_row.nonzero()[-1]] / (match_row.nonzero()[-1] + 1.0)
        for i, match_row in enumerate(matches)
    ]
    m_inp = torch.cat(inp).mean() * 100
    cols = [tmp_cmc[:, i] / (i + 1.0) for i in range(tmp_cmc.shape[1])]
    ap = (torch.stack(cols, 1) * matches).sum(1) / num_rel
    return all_cmc, ap.mean() * 100, m_inp


def _child(method: str, nq: int, ng: int, dim: int, k: int, device: str) -> dict[str, Any]:
    q, g, qpid, gpid = _inputs(nq, ng, dim, device)
    if method == "faiss IndexFlatIP":
        import faiss

        qn = F.normalize(q, dim=1).cpu().numpy()
        gn = F.normalize(g, dim=1).cpu().numpy()
        del q, g
    if method == "bare GEMM":
        qn_t, gn_t = F.normalize(q, dim=1), F.normalize(g, dim=1)
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
    elif method == "IRRA rank":
        sim = F.normalize(q, p=2, dim=1) @ F.normalize(g, p=2, dim=1).t()
        cmc, m_ap, m_inp = _irra_rank(sim, qpid, gpid)
        result = {
            "R1": float(cmc[0]),
            "R5": float(cmc[4]),
            "R10": float(cmc[9]),
            "mAP": float(m_ap),
            "mINP": float(m_inp),
        }
    elif method == "bare GEMM":
        result = {"shape": list(torch.mm(qn_t, gn_t.T).shape)}
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


_AVX2_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}

_BUSY = (
    "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a @ a\n"
)


def _check(method: str, nq: int, ng: int, rows: dict[str, dict[str, Any]]) -> str:
    """The comparison a row exists for, from median times."""
    t = {m: r["seconds"] for m, r in rows.items()}
    if method in ("IRRA rank", "full-sort eval") and "evaluate" in rows:
        ours, ref = rows["evaluate"]["result"], rows[method]["result"]
        same = all(f"{ours[key]:.3f}" == f"{ref[key]:.3f}" for key in ref)
        return f"same numbers: {same}; evaluate is {t[method] / t['evaluate']:.1f}x faster"
    if method == "bare GEMM" and "evaluate" in rows:
        return f"evaluate / GEMM = {t['evaluate'] / t[method]:.2f}"
    if method in ("faiss IndexFlatIP", "topk_search screen=off") and "topk_search" in rows:
        a, b = rows["topk_search"]["result"]["indices"], rows[method]["result"]["indices"]
        agree = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb))
        total = sum(len(r) for r in a)
        return f"hits agree {agree}/{total}; topk_search/this time ratio {t['topk_search'] / t[method]:.2f}"
    if method in ("evaluate", "evaluate gaussian"):
        r = rows[method]["result"]
        return f"R1 {r['R1']:.2f} mAP {r['mAP']:.2f} mINP {r['mINP']:.2f}"
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["6148x3074", "10000x200000"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds; medians shown")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--avx2", action="store_true", help="run the AVX2 kernels (see above)")
    ap.add_argument("--busy", type=int, default=0, help="other busy processes meanwhile")
    default = [m for m in METHODS if not m.endswith(("gaussian", "parts"))]
    ap.add_argument("--methods", nargs="+", default=default, choices=METHODS)
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.avx2 and any(os.environ.get(k) != v for k, v in _AVX2_ENV.items()):
        # The capability is read when torch loads: start again with it set.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_AVX2_ENV})
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
    print_machine()
    print(
        f"device {args.device}, D={args.dim}, k={args.k}, bfloat16 screen under "
        f"screen='auto': {screen}, {args.busy} busy processes, medians of {args.repeat} "
        "interleaved rounds"
    )
    busy = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(args.busy)]
    try:
        _table(args, have_faiss)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


def _table(args: argparse.Namespace, have_faiss: bool) -> None:
    print("| size (Nq x Ng) | method | time (s) | peak extra memory (MiB) | check |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        nq, ng = (int(v) for v in size.split("x"))
        methods = []
        for method in args.methods:
            if method in ("full-sort eval", "IRRA rank") and not _fits(nq, ng):
                need = nq * ng * 40 / 2**30
                print(f"| {nq} x {ng} | {method} | skipped: needs ~{need:.0f} GiB | | |")
            elif method != "faiss IndexFlatIP" or (have_faiss and args.device == "cpu"):
                methods.append(method)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        for _ in range(args.repeat):
            for method in methods:
                runs[method].append(_run(method, nq, ng, args))
        rows: dict[str, dict[str, Any]] = {}
        for method in methods:
            ordered = sorted(runs[method], key=lambda r: r["seconds"])
            rows[method] = dict(ordered[len(ordered) // 2])
            rows[method]["peak_mb"] = max(r["peak_mb"] for r in ordered)
        for method in methods:
            peak = rows[method]["peak_mb"]
            mem = f"{peak:.0f}" if math.isfinite(peak) else "?"
            check = _check(method, nq, ng, rows)
            print(
                f"| {nq} x {ng} | {method} | {rows[method]['seconds']:.3f} | {mem} | {check} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
