"""``textreid index``: embed a folder (or a list) of images into a sharded gallery index."""

from __future__ import annotations

import argparse

from textreid.cli._common import NewParser, add_device_option, positive_int


def add(new: NewParser) -> None:
    p = new(
        "index",
        help="embed a folder of images into a gallery index that searches can reuse",
        description="Writes a sharded GalleryIndex of IMAGES embedded by MODEL into --out; an "
        "interrupted run continues where it stopped (completed shards are kept).",
    )
    p.add_argument("model", help="retriever folder or hub repo id")
    p.add_argument(
        "images",
        help="folder of images (searched recursively) or a text file of image paths, one per line",
    )
    p.add_argument("--out", required=True, help="index folder to write")
    p.add_argument("--shard-size", type=positive_int, default=100_000, help="images per shard")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    add_device_option(p)
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start over instead of keeping the shards already written (default: keep them)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: only this command needs it.
    from textreid.indexing import index_folder

    out = index_folder(
        args.model,
        args.images,
        args.out,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(f"index written to {out}")
    return 0
