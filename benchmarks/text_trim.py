"""Milliseconds per training step of a recipe's method with caption batches padded to the
context length against batches cut after their longest caption (``data.trim_text``,
:func:`textreid.data.collate_trimmed`).

The captions are SynthPEDES's (generated into a temporary folder), batched by the recipe's
loader settings; images are random. Each step is forward + backward + AdamW. The two
variants alternate batch by batch, so that a busy machine slows both alike. Run by hand::

    python benchmarks/text_trim.py                      # tiny-irra, 2 threads
    python benchmarks/text_trim.py --recipe tiny-fmfa --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from _machine import print_machine  # benchmarks/ is the script's folder

from textreid.data import collate_trimmed, write_synthpedes
from textreid.data.pedes import build_dataset
from textreid.pipeline import build_method, build_tokenizer
from textreid.recipes import get_recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="tiny-irra")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    recipe = get_recipe(args.recipe)
    with tempfile.TemporaryDirectory() as root:
        write_synthpedes(root, num_identities=150, seed=0)
        data = build_dataset("synthpedes", root)
    train = data.train
    captions = [s.caption for s in train]
    tokenizer = build_tokenizer(recipe, recipe.context_length, train_captions=captions)
    method = build_method(recipe, data.num_classes, tokenizer=tokenizer)
    opt = torch.optim.AdamW(method.parameters(), 1e-4)
    b = recipe.data.batch_size
    h, w = recipe.data.image_size
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        pick = torch.randint(0, len(train), (b,), generator=gen).tolist()
        items = [
            {
                "images": torch.randn(3, h, w, generator=gen),
                "text_ids": tokenizer([captions[i]])[0],
                "pids": torch.tensor(train[i].pid),
            }
            for i in pick
        ]
        batches.append((torch.utils.data.default_collate(items), collate_trimmed(items)))

    def step(batch: dict[str, torch.Tensor]) -> float:
        t0 = time.perf_counter()
        loss = method(batch)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for pair in batches[:3]:  # warm-up
        for batch in pair:
            step(batch)
    times: dict[str, list[float]] = {"padded": [], "trimmed": []}
    lengths = []
    for padded, trimmed in batches:
        times["padded"].append(step(padded))
        times["trimmed"].append(step(trimmed))
        lengths.append(trimmed["text_ids"].shape[1])
    print_machine()
    print(
        f"recipe {args.recipe}, batch {b}, {args.threads} threads, {args.steps} steps; "
        f"context {recipe.context_length}, trimmed to {min(lengths)}-{max(lengths)} "
        f"(median {statistics.median(lengths):.0f})"
    )
    print("| batches | ms per step (median) |")
    print("|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {1e3 * statistics.median(ts):.1f} |")


if __name__ == "__main__":
    main()
