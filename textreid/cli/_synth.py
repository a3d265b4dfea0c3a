"""``textreid synth``: write the SynthPEDES dataset."""

from __future__ import annotations

import argparse
import time

from textreid.cli._common import NewParser, non_negative_int, positive_int


def add(new: NewParser) -> None:
    p = new("synth", help="write the SynthPEDES dataset (CUHK-PEDES format)")
    p.add_argument("root", help="output folder (the dataset goes to ROOT/CUHK-PEDES)")
    p.add_argument("--identities", type=positive_int, default=300, help="number of people")
    p.add_argument(
        "--images-per-identity", type=positive_int, default=4, help="images of each person"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the generator")
    p.add_argument("--overwrite", action="store_true", help="replace a SynthPEDES already in ROOT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
