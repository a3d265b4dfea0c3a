"""``textreid eval``: a saved retriever's metrics on a benchmark split."""

from __future__ import annotations

import argparse
import json

from textreid.cli._common import NewParser, add_device_option, positive_int
from textreid.cli._train import DATASET_HELP


def add(new: NewParser) -> None:
    p = new(
        "eval",
        help="evaluate a saved retriever (any architecture) on a benchmark split",
        description="Scores the split with the retriever's own model and scorer, as "
        "textreid train reports it: the same folder gives the same metrics.",
    )
    p.add_argument("checkpoint", help="retriever folder or hub repo id")
    p.add_argument("--data", required=True, help="dataset root folder")
    p.add_argument("--dataset", default="cuhk-pedes", help=DATASET_HELP)
    p.add_argument("--split", choices=("test", "val"), default="test", help="split to score")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=256,
        help="captions or images per forward pass (the recipes' evaluation batch size)",
    )
    add_device_option(p)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from textreid.data.pedes import build_dataset
    from textreid.hub import Retriever
    from textreid.pipeline import evaluate_retriever

    retriever = Retriever.from_pretrained(args.checkpoint, device=args.device)
    data = build_dataset(args.dataset, args.data)
    split = data.test if args.split == "test" else data.val
    if split.num_images == 0:
        raise ValueError(f"dataset {args.dataset!r} has no {args.split} split")
    metrics = evaluate_retriever(
        retriever, split, batch_size=args.batch_size, progress=not args.json
    )
    if args.json:
        print(json.dumps(metrics.to_dict()))
    else:
        print(metrics.format_table(f"{args.split} t2i"))
    return 0
