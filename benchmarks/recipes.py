"""Train every tiny recipe on the same seeded SynthPEDES for the same epochs and compare.

Run by hand (not in CI): ``python benchmarks/recipes.py [--epochs 6] [--identities 150]``.
Each recipe goes through :func:`textreid.pipeline.train_recipe` (epoch selection on the
validation split, then the test split). The table gives the mean training loss of the first
and the last epoch (each recipe's own objective, so only the trend compares across rows),
text-to-image R@1/5/10, mAP and mINP on the test split, the wall time, the R@1 a random
ranking would reach (the mean over queries of positives / gallery size), then the seed, the
optimizer updates, the wall seconds per epoch and the process CPU seconds (user + system, all
threads). On a shared machine the wall time grows with the load while the CPU time barely
does: CPU seconds / threads approximates the wall time of an idle machine.

``--seeds 0 1 2`` repeats every recipe with each seed, as ``textreid demo --seed S`` does:
the seed draws the dataset too, so the test split differs between seeds. Without
``--epochs`` each recipe trains for its own epoch count (the demo's setting).
``ATEN_CPU_CAPABILITY=avx2`` makes an AVX-512 machine run the AVX2 kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _machine import print_machine  # benchmarks/ is the script's folder

from textreid.data import build_dataset, write_synthpedes
from textreid.pipeline import train_recipe

TINY_RECIPES = ("tiny-irra", "tiny-fmfa", "tiny-ivt", "tiny-uca", "tiny-cmr")


def _epoch_losses(output_dir: Path) -> list[float]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [float(r["epoch_loss"]) for r in records if "epoch_loss" in r]


def _chance_r1(root: Path) -> float:
    test = build_dataset("synthpedes", root).test
    image_pids = torch.as_tensor(test.image_pids)
    positives = (torch.as_tensor(test.caption_pids)[:, None] == image_pids[None, :]).sum(1)
    return float(100 * positives.float().mean() / len(image_pids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=None, help="default: each recipe's own")
    parser.add_argument("--identities", type=int, default=150)
    parser.add_argument("--recipes", nargs="+", default=list(TINY_RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print_machine()
    header = (
        "| recipe | loss first -> last epoch | R@1 | R@5 | R@10 | mAP | mINP | wall s "
        "| chance R@1 | seed | updates | wall s/epoch | CPU s |"
    )
    rows = [header, "|" + "---|" * 13]
    r1: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            root = Path(tmp) / f"synth{seed}"
            write_synthpedes(root, num_identities=args.identities, seed=seed)
            chance = _chance_r1(root)
            for name in args.recipes:
                out = Path(tmp) / f"{name}-{seed}"
                start, cpu_start = time.perf_counter(), time.process_time()
                result = train_recipe(
                    name,
                    root,
                    dataset="synthpedes",
                    output_dir=out,
                    epochs=args.epochs,
                    device="cpu",
                    progress=False,
                    seed=seed,
                )
                wall = time.perf_counter() - start
                cpu = time.process_time() - cpu_start
                losses = _epoch_losses(out)
                m = result.test_metrics.to_dict()
                r1.setdefault(name, []).append(float(m["R1"]))
                rows.append(
                    f"| {name} | {losses[0]:.3f} -> {losses[-1]:.3f} | {m['R1']:.2f} "
                    f"| {m['R5']:.2f} | {m['R10']:.2f} | {m['mAP']:.2f} | {m['mINP']:.2f} "
                    f"| {wall:.0f} | {chance:.2f} | {seed} | {result.fit.global_step} "
                    f"| {wall / len(losses):.1f} | {cpu:.0f} |"
                )
                print(rows[-1], flush=True)
    print("\n".join(rows))
    for name, values in r1.items():
        if len(values) > 1:
            print(
                f"{name}: test R@1 mean {statistics.mean(values):.2f}, "
                f"min {min(values):.2f}, max {max(values):.2f} over seeds {args.seeds}"
            )


if __name__ == "__main__":
    main()
