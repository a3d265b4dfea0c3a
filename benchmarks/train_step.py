"""Samples/s and peak memory of one training step: textreid's CLIP vs open_clip's, same config.

Both models get the same architecture (width, depth, heads, patch, 384x128 input, QuickGELU),
the same batch and the same objective (symmetric InfoNCE on the global features), and run
forward + backward + an AdamW step. textreid's attention goes through
``scaled_dot_product_attention``; open_clip is used as installed (``pip install
open_clip_torch``). Run by hand::

    python benchmarks/train_step.py --model ViT-B/16 --batch 64 --device cuda
    python benchmarks/train_step.py --model small --batch 16            # CPU-sized

Peak memory: CUDA's ``max_memory_allocated`` on GPU; on CPU the growth of the process's peak
resident set size, measured in a fresh subprocess per model so the two do not mix.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from _machine import print_machine  # benchmarks/ is the script's folder

SIZES = {
    # name: (vision width, layers, heads, text width, text layers, text heads, embed dim, patch)
    "ViT-B/16": (768, 12, 12, 512, 12, 8, 512, 16),
    "small": (256, 4, 4, 256, 4, 4, 256, 16),
    "tiny": (64, 1, 2, 64, 1, 2, 64, 16),  # checks code paths only (gpu_suite --smoke)
}


def _build(impl: str, size: str, image_size: tuple[int, int]) -> torch.nn.Module:
    vw, vl, vh, tw, tl, th, dim, patch = SIZES[size]
    if impl == "textreid":
        from textreid.models import create_model

        return create_model(
            "ViT-B/16",
            image_size=image_size,
            embed_dim=dim,
            vision={"width": vw, "layers": vl, "heads": vh, "patch_size": patch},
            text={"width": tw, "layers": tl, "heads": th},
        )

    cfg = {
        "embed_dim": dim,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": list(image_size),
            "layers": vl,
            "width": vw,
            "patch_size": patch,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": tw,
            "heads": th,
            "layers": tl,
        },
    }
    from open_clip.model import CLIP

    return CLIP(**cfg)


def _child(impl: str, size: str, batch: int, steps: int, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    image_size = (384, 128)
    model = _build(impl, size, image_size).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    images = torch.randn(batch, 3, *image_size, device=device)
    ids = torch.randint(1, 49000, (batch, 77), device=device)
    ids[:, 30] = 49407
    labels = torch.arange(batch, device=device)

    def step() -> None:
        v = F.normalize(model.encode_image(images), dim=-1)
        t = F.normalize(model.encode_text(ids), dim=-1)
        logits = 50.0 * v @ t.T
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up (allocations, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    elapsed = time.perf_counter() - start
    return {"samples_per_s": batch * steps / elapsed, "peak_mib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(SIZES), default="small")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.batch, args.steps, args.device)))
        return
    rows = []
    for impl in ("textreid", "open_clip"):
        cmd = [sys.executable, __file__, "--child", impl, "--model", args.model]
        cmd += ["--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append((impl, json.loads(out.strip().splitlines()[-1])))
    print_machine()
    print(f"model {args.model}, batch {args.batch}, 384x128, {args.steps} steps on {args.device}")
    print(f"{'impl':10s} | {'samples/s':>10s} | {'peak MiB':>9s}")
    print("-" * 36)
    for impl, r in rows:
        print(f"{impl:10s} | {r['samples_per_s']:10.2f} | {r['peak_mib']:9.1f}")
    base = rows[1][1]["samples_per_s"]
    print(f"textreid / open_clip speed: {rows[0][1]['samples_per_s'] / base:.2f}x")


if __name__ == "__main__":
    main()
