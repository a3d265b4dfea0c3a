"""``textreid recipes``: the registered recipes and what a run of each costs."""

from __future__ import annotations

import argparse

from textreid.cli._common import NewParser

#: Seconds per training epoch of the tiny recipes on SynthPEDES (300 identities) on one CPU
#: thread, measured by ``benchmarks/recipes.py`` (docs/recipes.md, "All tiny recipes at equal
#: budget": wall seconds / 6 epochs). Full-size recipes need a GPU and are not timed here.
SECONDS_PER_EPOCH = {
    "tiny-cmr": 5.5,
    "tiny-fmfa": 13.7,
    "tiny-irra": 5.3,
    "tiny-ivt": 7.7,
    "tiny-uca": 9.5,
}


def add(new: NewParser) -> None:
    p = new(
        "recipes",
        help="list the registered recipes",
        description="One row per recipe: method, epochs, batch size, learning rate, image "
        "size and the expected training time (measured on one CPU thread for the tiny "
        "recipes on the demo's SynthPEDES; GPU for the full-size ones).",
    )
    p.set_defaults(func=run)


def cpu_time(name: str, epochs: int, pretrained: str | None) -> str:
    """The expected training time column: ``~4 min`` (measured), ``GPU`` or ``?``."""
    if name in SECONDS_PER_EPOCH:
        minutes = SECONDS_PER_EPOCH[name] * epochs / 60
        return f"~{minutes:.0f} min" if minutes >= 1 else "<1 min"
    return "GPU" if pretrained is not None or not name.startswith("tiny") else "not measured"


def run(args: argparse.Namespace) -> int:
    from textreid.recipes import get_recipe, list_recipes

    header = ("recipe", "method", "epochs", "batch", "lr", "image", "CPU time (1 thread)")
    rows = [header]
    for name in list_recipes():
        r = get_recipe(name)
        rows.append(
            (
                name,
                r.method,
                str(r.trainer.epochs),
                str(r.data.batch_size),
                f"{r.trainer.lr:g}",
                f"{r.data.image_size[0]}x{r.data.image_size[1]}",
                cpu_time(name, r.trainer.epochs, r.pretrained),
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
