"""``textreid search``: the top-k images of a folder for each caption."""

from __future__ import annotations

import argparse
import sys

from textreid.cli._common import NewParser, add_device_option, image_file_name, positive_int


def add(new: NewParser) -> None:
    p = new(
        "search",
        help="search a folder of images with a caption (any architecture)",
        description="Prints the top-k images per caption, scored the retriever's way; "
        "Gaussian (UCA) retrievers also print each caption's and each hit's uncertainty.",
    )
    p.add_argument("checkpoint", help="retriever folder or hub repo id")
    p.add_argument("--text", action="append", required=True, help="caption (repeatable)")
    p.add_argument("--gallery", required=True, help="folder of images (searched recursively)")
    p.add_argument(
        "--k",
        type=positive_int,
        default=5,
        help="images per caption (at most the gallery's size)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="also draw the results into this image file; .png is added to a name without "
        "an extension (default: no image)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    add_device_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from textreid.hub import Retriever
    from textreid.visualize import save_result_grid

    out = image_file_name(args.out, "--out") if args.out is not None else None
    retriever = Retriever.from_pretrained(args.checkpoint, device=args.device)
    gallery = retriever.index_images(args.gallery, batch_size=args.batch_size, store_tokens=False)
    texts = list(args.text)
    k = min(args.k, len(gallery))
    if k < args.k:
        print(f"note: the gallery has {len(gallery)} images; showing the top {k}", file=sys.stderr)
    hits = retriever.search(texts, gallery, k=k)
    paths = gallery.paths
    assert paths is not None
    for row, (text, idx, score) in enumerate(
        zip(texts, hits.indices.tolist(), hits.scores.tolist())
    ):
        print(f"query: {text}")
        # Gaussian retrievers say how sure they are of each caption and each hit.
        if hits.query_uncertainty is not None:
            print(f"  uncertainty {float(hits.query_uncertainty[row]):.6g}")
        for rank, (i, s) in enumerate(zip(idx, score), start=1):
            line = f"  {rank:2d}. {s:.4f}  {paths[i]}"
            if hits.gallery_uncertainty is not None:
                line += f"  (uncertainty {float(hits.gallery_uncertainty[row, rank - 1]):.6g})"
            print(line)
    if out is not None:
        grid = save_result_grid(texts, hits, paths, out)
        print(f"grid written to {grid}")
    return 0
