"""``textreid convert``: an IRRA-family or IVT checkpoint -> a retriever folder."""

from __future__ import annotations

import argparse

from textreid.cli._common import NewParser, positive_int


def add(new: NewParser) -> None:
    p = new(
        "convert",
        help="convert an IRRA-family or IVT checkpoint into a textreid retriever folder",
    )
    p.add_argument(
        "--from",
        dest="source_format",
        choices=("irra", "ivt"),
        required=True,
        help="the code base that wrote the checkpoint: irra (IRRA and its kin, best.pth) or "
        "ivt (IVT's released checkpoints, BERT text embeddings)",
    )
    p.add_argument("checkpoint", help="the .pth file (loaded with weights_only=True)")
    p.add_argument("out_dir", help="output folder")
    p.add_argument(
        "--vocab",
        default=None,
        metavar="VOCAB_TXT",
        help="--from ivt only, required there: the vocab.txt of the BERT tokenizer the "
        "checkpoint was trained with (IVT: bert-base-uncased's); textreid bundles none "
        "(default: none, as --from irra needs)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        nargs=2,
        default=(384, 128),
        metavar=("H", "W"),
        help="the input size the checkpoint was trained at (default: 384 128)",
    )
    p.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="patch stride used in training (default: the patch size for irra, inferred from "
        "the position embedding for ivt)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from textreid.convert import convert_irra_checkpoint, convert_ivt_checkpoint

    if (args.vocab is None) == (args.source_format == "ivt"):
        need = "needs --vocab (the BERT vocab.txt)" if args.vocab is None else "takes no --vocab"
        raise ValueError(f"--from {args.source_format} {need}")
    size = tuple(args.image_size)
    if args.source_format == "ivt":
        out = convert_ivt_checkpoint(
            args.checkpoint,
            args.out_dir,
            vocab_file=args.vocab,
            image_size=size,
            stride=args.stride,
        )
    else:
        out = convert_irra_checkpoint(
            args.checkpoint, args.out_dir, image_size=size, stride=args.stride
        )
    print(f"converted {args.checkpoint} -> {out}")
    return 0
