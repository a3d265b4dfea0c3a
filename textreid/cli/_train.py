"""``textreid train``: a recipe on a benchmark, the best epoch selected, tested and saved."""

from __future__ import annotations

import argparse

from textreid.cli._common import NewParser, add_training_options, non_negative_int, training_kwargs

#: Spelled out in the help: listing the registry would import torch.
DATASET_HELP = (
    "dataset name: cuhk-pedes, icfg-pedes, rstpreid, synthpedes or a registered one; it must "
    "match the folder given to --data"
)


def add(new: NewParser) -> None:
    p = new("train", help="train a recipe on a benchmark")
    p.add_argument("--recipe", required=True, help="recipe name (see textreid recipes)")
    p.add_argument("--data", required=True, help="dataset root folder")
    p.add_argument("--dataset", default="cuhk-pedes", help=DATASET_HELP)
    p.add_argument("--output", default="runs/textreid", help="output folder")
    p.add_argument(
        "--select-on-test",
        action="store_true",
        help="select the best epoch on the TEST split (IRRA's protocol; optimistic numbers)",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="seed of the model's initialisation, data order and augmentation; the same "
        "command then trains the same weights (default: the recipe's seed, 0 for most)",
    )
    add_training_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from textreid.pipeline import train_recipe

    result = train_recipe(
        args.recipe,
        args.data,
        dataset=args.dataset,
        output_dir=args.output,
        select_on_test=args.select_on_test,
        seed=args.seed,
        **training_kwargs(args),
    )
    if result.test_metrics is None:  # torchrun ranks > 0 only train
        return 0
    if result.val_metrics is not None:
        print(result.val_metrics.format_table("val t2i"))
    print(result.test_metrics.format_table("test t2i"))
    print(f"retriever saved to {result.retriever_dir}")
    return 0
