"""Train every tiny recipe on the same seeded SynthPEDES for the same epochs and compare.

Run by hand (not in CI): ``python benchmarks/recipes.py [--epochs 2] [--identities 150]``.
Each recipe goes through :func:`textreid.pipeline.train_recipe` (epoch selection on the
validation split, then the test split). The table gives the mean training loss of the first
and the last epoch (each recipe's own objective, so only the trend compares across rows),
text-to-image R@1/5/10, mAP and mINP on the test split, the wall time, and the R@1 a random
ranking would reach (the mean over queries of positives / gallery size).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

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
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--identities", type=int, default=150)
    parser.add_argument("--recipes", nargs="+", default=list(TINY_RECIPES))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        write_synthpedes(root, num_identities=args.identities, seed=0)
        chance = _chance_r1(root)
        header = (
            f"| recipe | loss epoch 1 -> {args.epochs} | R@1 | R@5 | R@10 | mAP | mINP "
            "| wall s | chance R@1 |"
        )
        rows = [header, "|" + "---|" * 9]
        for name in args.recipes:
            out = Path(tmp) / name
            start = time.perf_counter()
            result = train_recipe(
                name,
                root,
                dataset="synthpedes",
                output_dir=out,
                epochs=args.epochs,
                device="cpu",
                progress=False,
            )
            wall = time.perf_counter() - start
            losses = _epoch_losses(out)
            m = result.test_metrics.to_dict()
            rows.append(
                f"| {name} | {losses[0]:.3f} -> {losses[-1]:.3f} | {m['R1']:.2f} | {m['R5']:.2f} "
                f"| {m['R10']:.2f} | {m['mAP']:.2f} | {m['mINP']:.2f} | {wall:.0f} | {chance:.2f} |"
            )
            print(rows[-1], flush=True)
        print("\n".join(rows))


if __name__ == "__main__":
    main()
