"""Draw search results: one row per text query, its top-k gallery images to the right."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

from textreid.retrieval.search import SearchResult

__all__ = ["save_result_grid"]

_GREEN = (46, 160, 67)
_RED = (214, 39, 40)
_GREY = (120, 120, 120)


def save_result_grid(
    queries: Sequence[str],
    result: SearchResult,
    image_paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    query_pids: Sequence[int] | None = None,
    gallery_pids: Sequence[int] | None = None,
    thumb_size: tuple[int, int] = (128, 64),
    text_width: int = 260,
) -> Path:
    """Write a PNG grid of ranked images per query.

    Each row shows the query text, then its top-k images left to right with rank and score;
    with ``query_pids`` and ``gallery_pids`` a green frame marks a correct identity and a red
    one a wrong identity.

    Args:
        queries: ``Nq`` query captions (the rows).
        result: the :class:`~textreid.retrieval.SearchResult` of those queries.
        image_paths: path of every gallery item (indexed by ``result.indices``).
        out: output PNG path.
        query_pids, gallery_pids: identities, to colour the frames.
        thumb_size: ``(H, W)`` of each thumbnail.
        text_width: pixels reserved for the query text.

    Returns:
        The written path.
    """
    from PIL import Image, ImageDraw, ImageFont

    fn = "save_result_grid"
    indices = result.indices.cpu()
    scores = result.scores.cpu()
    if indices.dim() != 2 or indices.shape[0] != len(queries):
        raise ValueError(
            f"{fn}: result has {indices.shape[0] if indices.dim() else 0} rows but "
            f"{len(queries)} queries were given"
        )
    if (query_pids is None) != (gallery_pids is None):
        raise ValueError(f"{fn}: query_pids and gallery_pids must be given together")
    th, tw = thumb_size
    pad, label_h = 6, 14
    k = indices.shape[1]
    row_h = th + label_h + 2 * pad
    width = text_width + k * (tw + pad) + pad
    canvas = Image.new("RGB", (width, max(1, len(queries)) * row_h), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    chars = max(10, text_width // 7)
    for r, query in enumerate(queries):
        y = r * row_h + pad
        lines = textwrap.wrap(query, chars)[: max(1, (row_h - pad) // 12)]
        draw.multiline_text((pad, y), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=2)
        for c in range(k):
            g = int(indices[r, c])
            x = text_width + c * (tw + pad)
            with Image.open(image_paths[g]) as img:
                thumb = img.convert("RGB").resize((tw, th))
            canvas.paste(thumb, (x, y))
            colour = _GREY
            if query_pids is not None and gallery_pids is not None:
                colour = _GREEN if gallery_pids[g] == query_pids[r] else _RED
            draw.rectangle((x - 2, y - 2, x + tw + 1, y + th + 1), outline=colour, width=3)
            draw.text(
                (x, y + th + 3), f"#{c + 1} {float(scores[r, c]):.2f}", fill=colour, font=font
            )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
