"""Search a folder of pedestrian images with a sentence, as you would in a notebook.

Each ``# %%`` block is one notebook cell. Point it at a trained retriever (a folder written
by ``textreid train`` / ``textreid demo``, or a Hub repository id) and a folder of images:

    python examples/notebook_search.py --retriever demo-run/run/retriever \\
        --gallery demo-run/synthpedes/CUHK-PEDES/imgs --out search.png

``--smoke`` needs nothing: it writes a tiny SynthPEDES, builds and saves a tiny untrained
retriever, then runs the same cells on it (the ranking is then meaningless, the code path is
the real one).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import textreid
from textreid.visualize import save_result_grid


def make_smoke_inputs(root: Path) -> tuple[Path, Path]:
    """A saved tiny retriever and a small gallery folder, in ``root``."""
    data = textreid.write_synthpedes(root / "synthpedes", num_identities=12, images_per_identity=2)
    model = textreid.create_model("tiny", image_size=(64, 32))
    retriever_dir = textreid.Retriever(model).save_pretrained(root / "retriever")
    return retriever_dir, data / "imgs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny untrained model (seconds)")
    parser.add_argument("--retriever", default=None, help="retriever folder or 'org/repo'")
    parser.add_argument("--gallery", default=None, help="folder of images to search")
    parser.add_argument(
        "--text",
        default="a young woman in a pink coat and a grey skirt, with white shoes",
        help="the query sentence",
    )
    parser.add_argument("--out", default="search_grid.png", help="PNG grid of the top-5")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.retriever, args.gallery = make_smoke_inputs(Path(tmp))
        if args.retriever is None or args.gallery is None:
            parser.error("give --retriever and --gallery (or --smoke)")

        # %% Load a retriever: a local folder never touches the network.
        retriever = textreid.Retriever.from_pretrained(args.retriever)
        print(retriever.card.description or "retriever loaded")

        # %% Index a folder: every image file in it, sorted, recursively; paths are recorded.
        gallery = retriever.index_images(args.gallery)
        print(f"indexed {len(gallery)} images")
        # gallery.save("gallery-index") and textreid.GalleryIndex.load("gallery-index") keep
        # the features, so the folder need not be encoded again.

        # %% Search: the top-5 gallery items for the sentence, best first.
        hits = retriever.search(args.text, gallery, k=min(5, len(gallery)))
        paths = gallery.paths or []
        for rank, (i, score) in enumerate(zip(hits.indices[0].tolist(), hits.scores[0].tolist())):
            print(f"{rank + 1}. {score:.3f}  {paths[i]}")

        # %% Draw the result: one row per query, its top-5 images left to right.
        grid = save_result_grid([args.text], hits, paths, args.out)
        print(f"wrote {grid}")


if __name__ == "__main__":
    main()
