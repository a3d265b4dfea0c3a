"""``textreid demo``: the whole job on a fresh machine, no data and no network needed."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from textreid.cli._common import (
    NewParser,
    add_training_options,
    non_negative_int,
    positive_int,
    training_kwargs,
)

if TYPE_CHECKING:
    from textreid.data.pedes import PedesSplit

#: The demo's output folder; the getting-started guide and the README use this name.
DEFAULT_OUT = "demo-run"


def add(new: NewParser) -> None:
    p = new(
        "demo",
        help="synthesise a dataset, train the tiny recipe, evaluate, save, draw a grid",
        description="The whole job on a fresh machine with no data and no network: writes "
        "SynthPEDES, trains a tiny IRRA model on the CPU, prints R@1/5/10/mAP/mINP on the "
        "test split, saves the retriever and a PNG grid of top-5 results.",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    p.add_argument("--recipe", default="tiny-irra", help="recipe to train (see textreid recipes)")
    p.add_argument("--identities", type=positive_int, default=300, help="SynthPEDES identities")
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the dataset, the model's initialisation, data order and augmentation",
    )
    add_training_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from textreid.data.synthetic import write_synthpedes
    from textreid.pipeline import train_recipe
    from textreid.recipes import get_recipe

    get_recipe(args.recipe)  # a misspelt name fails now, not after the dataset is written
    settings = training_kwargs(args)
    out = Path(args.out)
    data_root = out / "synthpedes"
    start = time.perf_counter()
    if not (data_root / "CUHK-PEDES" / "reid_raw.json").is_file():
        print(f"[1/4] writing SynthPEDES ({args.identities} identities) to {data_root}", flush=True)
        write_synthpedes(data_root, num_identities=args.identities, seed=args.seed)
    else:
        print(f"[1/4] using the SynthPEDES already in {data_root}", flush=True)
    print(f"[2/4] training recipe {args.recipe!r} on the CPU-sized model", flush=True)
    result = train_recipe(
        args.recipe,
        data_root,
        dataset="synthpedes",
        output_dir=out / "run",
        seed=args.seed,
        **settings,
    )
    if result.test_metrics is None:  # only under torchrun, on ranks > 0
        return 0
    print("[3/4] test split, text-to-image:")
    print(result.test_metrics.format_table())
    n_ids = _read_test_split(data_root).num_ids
    print(f"      chance R@1 is about {100.0 / max(n_ids, 1):.2f}% ({n_ids} test identities)")
    grid = _demo_grid(result.retriever, data_root, out / "search_grid.png", args.seed)
    print(f"[4/4] saved the retriever to {result.retriever_dir} and the top-5 grid to {grid}")
    metrics = {k: float(v) for k, v in result.test_metrics.to_dict().items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


def _read_test_split(data_root: Path) -> PedesSplit:
    from textreid.data.pedes import build_dataset

    return build_dataset("synthpedes", data_root).test


def _demo_grid(retriever: object, data_root: Path, out: Path, seed: int) -> Path:
    import random

    from textreid.hub import Retriever
    from textreid.visualize import save_result_grid

    assert isinstance(retriever, Retriever)
    test = _read_test_split(data_root)
    rng = random.Random(seed)
    rows = sorted(rng.sample(range(test.num_captions), min(4, test.num_captions)))
    # These searches never re-rank: image tokens would only take memory.
    gallery = retriever.index_images(test.img_paths, ids=test.image_pids, store_tokens=False)
    queries = [test.captions[i] for i in rows]
    # The whole gallery ranked, five drawn: a row whose person is not in its top 5 says at
    # which rank it comes.
    hits = retriever.search(queries, gallery, k=test.num_images)
    return save_result_grid(
        queries,
        hits,
        test.img_paths,
        out,
        query_pids=[test.caption_pids[i] for i in rows],
        gallery_pids=test.image_pids,
        k=min(5, test.num_images),
    )
