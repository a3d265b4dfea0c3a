"""The ``textreid`` command: ``demo``, ``train``, ``eval``, ``search``, ``synth``, ``convert``.

Run ``textreid COMMAND --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textreid.data.pedes import PedesSplit

__all__ = ["build_parser", "main"]


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _cmd_demo(args: argparse.Namespace) -> int:
    from textreid.data.synthetic import write_synthpedes
    from textreid.pipeline import train_recipe

    out = Path(args.out)
    data_root = out / "synthpedes"
    start = time.perf_counter()
    if not (data_root / "CUHK-PEDES" / "reid_raw.json").is_file():
        print(f"[1/4] writing SynthPEDES ({args.identities} identities) to {data_root}")
        write_synthpedes(data_root, num_identities=args.identities, seed=args.seed)
    else:
        print(f"[1/4] using the SynthPEDES already in {data_root}")
    print(f"[2/4] training recipe {args.recipe!r} on the CPU-sized model")
    result = train_recipe(
        args.recipe,
        data_root,
        dataset="synthpedes",
        output_dir=out / "run",
        epochs=args.epochs,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        seed=args.seed,
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
    hits = retriever.search(queries, gallery, k=min(5, test.num_images))
    return save_result_grid(
        queries,
        hits,
        test.img_paths,
        out,
        query_pids=[test.caption_pids[i] for i in rows],
        gallery_pids=test.image_pids,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from textreid.pipeline import train_recipe

    result = train_recipe(
        args.recipe,
        args.data,
        dataset=args.dataset,
        output_dir=args.output,
        epochs=args.epochs,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        select_on_test=args.select_on_test,
        seed=args.seed,
    )
    if result.test_metrics is None:  # torchrun ranks > 0 only train
        return 0
    if result.val_metrics is not None:
        print(result.val_metrics.format_table("val t2i"))
    print(result.test_metrics.format_table("test t2i"))
    print(f"retriever saved to {result.retriever_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from textreid.data.pedes import build_dataset
    from textreid.hub import Retriever
    from textreid.pipeline import evaluate_retriever

    retriever = Retriever.from_pretrained(args.checkpoint, device=args.device)
    data = build_dataset(args.dataset, args.data)
    split = data.test if args.split == "test" else data.val
    if split.num_images == 0:
        raise SystemExit(f"textreid eval: dataset {args.dataset!r} has no {args.split} split")
    metrics = evaluate_retriever(
        retriever, split, batch_size=args.batch_size, progress=not args.json
    )
    if args.json:
        print(json.dumps(metrics.to_dict()))
    else:
        print(metrics.format_table(f"{args.split} t2i"))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from textreid.hub import Retriever
    from textreid.visualize import save_result_grid

    retriever = Retriever.from_pretrained(args.checkpoint, device=args.device)
    gallery = retriever.index_images(args.gallery, batch_size=args.batch_size, store_tokens=False)
    texts = list(args.text)
    hits = retriever.search(texts, gallery, k=min(args.k, len(gallery)))
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
    if args.out:
        grid = save_result_grid(texts, hits, paths, args.out)
        print(f"grid written to {grid}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from textreid.data.synthetic import write_synthpedes

    start = time.perf_counter()
    folder = write_synthpedes(
        args.root,
        num_identities=args.identities,
        images_per_identity=args.images_per_identity,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"SynthPEDES written to {folder} in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    """The ``textreid`` argument parser (one subcommand per job)."""
    parser = argparse.ArgumentParser(
        prog="textreid",
        description="Text-to-image person retrieval: train, evaluate, search, convert.",
    )
    from textreid._version import __version__

    parser.add_argument("--version", action="version", version=f"textreid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    # Also accepted after the command; SUPPRESS keeps a subcommand from resetting it to False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add(
        "demo",
        help="synthesise a dataset, train the tiny recipe, evaluate, save, draw a grid",
        description="The whole job on a fresh machine with no data and no network: writes "
        "SynthPEDES, trains a tiny IRRA model on the CPU, prints R@1/5/10/mAP/mINP on the "
        "test split, saves the retriever and a PNG grid of top-5 results.",
    )
    p.add_argument("--out", default="textreid-demo", help="output folder (default: %(default)s)")
    p.add_argument("--recipe", default="tiny-irra", help="recipe to train (default: %(default)s)")
    p.add_argument("--identities", type=int, default=300, help="SynthPEDES identities")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the dataset, the model's initialisation, data order and augmentation "
        "(default: %(default)s)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    _add_train_args(p)
    p.set_defaults(func=_cmd_demo)

    p = add("train", help="train a recipe on a benchmark")
    p.add_argument("--recipe", required=True, help="recipe name (see textreid recipes)")
    p.add_argument("--data", required=True, help="dataset root folder")
    p.add_argument("--dataset", default="cuhk-pedes", help="dataset name (default: %(default)s)")
    p.add_argument("--output", default="runs/textreid", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument(
        "--select-on-test",
        action="store_true",
        help="select the best epoch on the TEST split (IRRA's protocol; optimistic numbers)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the model's initialisation, data order and augmentation; the same "
        "command then trains the same weights (default: the recipe's seed, 0 for most)",
    )
    _add_train_args(p)
    p.set_defaults(func=_cmd_train)

    p = add(
        "eval",
        help="evaluate a saved retriever (any architecture) on a benchmark split",
        description="Scores the split with the retriever's own model and scorer, as "
        "textreid train reports it: the same folder gives the same metrics.",
    )
    p.add_argument("checkpoint", help="retriever folder or hub repo id")
    p.add_argument("--data", required=True, help="dataset root folder")
    p.add_argument("--dataset", default="cuhk-pedes", help="dataset name (default: %(default)s)")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="captions or images per forward pass (default: %(default)s, the recipes' "
        "evaluation batch size)",
    )
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=_cmd_eval)

    p = add(
        "search",
        help="search a folder of images with a caption (any architecture)",
        description="Prints the top-k images per caption, scored the retriever's way; "
        "Gaussian (UCA) retrievers also print each caption's and each hit's uncertainty.",
    )
    p.add_argument("checkpoint", help="retriever folder or hub repo id")
    p.add_argument("--text", action="append", required=True, help="caption (repeatable)")
    p.add_argument("--gallery", required=True, help="folder of images")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--out", default=None, help="write a PNG grid of the results here")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_search)

    p = add("synth", help="write the SynthPEDES dataset (CUHK-PEDES format)")
    p.add_argument("root", help="output folder")
    p.add_argument("--identities", type=int, default=300)
    p.add_argument("--images-per-identity", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_synth)

    p = add(
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
        help="--from ivt only, required: the vocab.txt of the BERT tokenizer the checkpoint was "
        "trained with (IVT: bert-base-uncased's); textreid bundles none",
    )
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(384, 128),
        metavar=("H", "W"),
        help="the input size the checkpoint was trained at (default: 384 128)",
    )
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        help="patch stride used in training (default: the patch size for irra, inferred from "
        "the position embedding for ivt)",
    )
    p.set_defaults(func=_cmd_convert)

    p = add("recipes", help="list the registered recipes")
    p.set_defaults(func=_cmd_recipes)
    return parser


def _cmd_recipes(args: argparse.Namespace) -> int:
    from textreid.recipes import get_recipe, list_recipes

    for name in list_recipes():
        recipe = get_recipe(name)
        print(f"{name:14s} method={recipe.method:6s} model={recipe.model:9s} {recipe.citation}")
    return 0


def _output_path(args: argparse.Namespace) -> str | None:
    """The folder or file the command writes, the likely culprit of an OSError without a path."""
    for name in ("out", "output", "out_dir", "root"):
        value = getattr(args, name, None)
        if value is not None:
            return str(value)
    return None


def _describe_os_error(exc: OSError, args: argparse.Namespace) -> str:
    """One line naming the path and the cause, e.g. ``/data/run: No space left on device``."""
    number = exc.errno
    if number is None and len(exc.args) == 1 and isinstance(exc.args[0], int):
        number = exc.args[0]  # OSError(errno.ENOSPC) keeps the number in args only
    if number is None:
        # our own message, raised as FileNotFoundError and the like
        return str(exc) or type(exc).__name__
    cause = exc.strerror or os.strerror(number)
    if number in errno.errorcode:
        cause = f"{cause} ({errno.errorcode[number]})"
    if exc.filename is not None:
        where = os.fsdecode(exc.filename)
        if exc.filename2 is not None:
            where = f"{where} -> {os.fsdecode(exc.filename2)}"
        return f"{where}: {cause}"
    out = _output_path(args)
    return f"while writing {out}: {cause}" if out is not None else cause


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``textreid`` console script.

    Expected failures (bad arguments, missing or unwritable files, a full disk) print one line
    ``textreid COMMAND: error: ...`` on stderr and return 2; ``--debug`` lets the exception
    propagate with its traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        if getattr(args, "debug", False):
            raise
        message = _describe_os_error(exc, args) if isinstance(exc, OSError) else str(exc)
        print(f"textreid {args.command}: error: {message}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
