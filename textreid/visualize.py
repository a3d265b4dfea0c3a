"""Draw search results: one row per text query, its top-k gallery images to the right."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from textreid._io import atomic_path
from textreid.retrieval.search import SearchResult

__all__ = ["save_result_grid"]

_GREEN = (46, 160, 67)
_RED = (214, 39, 40)
_GREY = (120, 120, 120)
_BLACK = (0, 0, 0)
_FONT_SIZE = 12
_MIN_GAP_EM = 0.4
"""The smallest gap between two words, in font sizes. Pillow's built-in font advances a space
by about a fifth of its size, which reads as no space at all in a small caption."""
_ELLIPSIS = "..."


def _wrap_words(
    text: str, measure: Callable[[str], float], width: float, gap: float
) -> list[list[str]]:
    """Greedy word wrap: lines of words whose drawn width stays within ``width``.

    A line's drawn width is the sum of its words' widths plus ``gap`` between neighbours. A
    word wider than ``width`` on its own is cut into the longest pieces that fit (at least
    one character each, so a column narrower than one character still terminates).
    """
    lines: list[list[str]] = []
    line: list[str] = []
    used = 0.0
    for word in text.split():
        pieces = [word]
        if measure(word) > width:
            pieces = []
            rest = word
            while rest:
                cut = len(rest)
                while cut > 1 and measure(rest[:cut]) > width:
                    cut -= 1
                pieces.append(rest[:cut])
                rest = rest[cut:]
        for piece in pieces:
            w = measure(piece)
            if line and used + gap + w > width:
                lines.append(line)
                line, used = [], 0.0
            used = w if not line else used + gap + w
            line.append(piece)
    if line:
        lines.append(line)
    return lines


def _line_width(words: Sequence[str], measure: Callable[[str], float], gap: float) -> float:
    return sum(measure(w) for w in words) + gap * max(0, len(words) - 1)


def _fit_lines(
    lines: list[list[str]],
    max_lines: int,
    measure: Callable[[str], float],
    width: float,
    gap: float,
) -> list[list[str]]:
    """The first ``max_lines`` lines, the last ending in an ellipsis when text was cut."""
    if len(lines) <= max_lines:
        return lines
    if max_lines <= 0:
        return []
    kept = [list(line) for line in lines[:max_lines]]
    last = kept[-1]
    while last and _line_width([*last, _ELLIPSIS], measure, gap) > width:
        last.pop()
    last.append(_ELLIPSIS)
    return kept


def _rank_note(
    ranked_pids: Sequence[int], query_pid: int, shown: int, gallery_pids: Sequence[int]
) -> str | None:
    """What a row says when none of its ``shown`` images is the queried person.

    ``ranked_pids`` are the identities of the row's searched gallery items, best first; it may
    go deeper than ``shown``, up to the whole gallery.
    """
    for rank, pid in enumerate(ranked_pids, start=1):
        if pid == query_pid:
            return None if rank <= shown else f"right person at rank {rank}"
    if query_pid not in gallery_pids:
        return "right person not in the gallery"
    return f"right person not in the top {len(ranked_pids)}"


def _check_out(out: str | os.PathLike[str], fn: str) -> tuple[Path, str]:
    """The output path and the Pillow format its extension names."""
    from PIL import Image

    path = Path(out)
    formats = Image.registered_extensions()
    suffix = path.suffix.lower()
    if suffix not in formats:
        raise ValueError(
            f"{fn}: out {str(out)!r} has no image file extension Pillow can write "
            f"(expected e.g. '.png' or '.jpg'); got {suffix or 'none'}"
        )
    return path, formats[suffix]


def _draw_lines(
    draw: Any,
    xy: tuple[int, int],
    lines: list[list[str]],
    font: Any,
    gap: float,
    line_h: int,
    fill: tuple[int, int, int],
) -> None:
    # Word by word, so that the gap between words is ours and not the font's space.
    x0, y = xy
    for line in lines:
        x = float(x0)
        for word in line:
            draw.text((round(x), y), word, fill=fill, font=font)
            x += font.getlength(word) + gap
        y += line_h


def save_result_grid(
    queries: Sequence[str],
    result: SearchResult,
    image_paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    query_pids: Sequence[int] | None = None,
    gallery_pids: Sequence[int] | None = None,
    k: int | None = None,
    thumb_size: tuple[int, int] = (128, 64),
    text_width: int = 260,
) -> Path:
    """Write an image grid of ranked gallery images per query.

    Each row shows the query text, then its top-``k`` images left to right with rank and
    score. With ``query_pids`` and ``gallery_pids`` a legend heads the grid, a green frame
    marks the queried person and a red one another person, and a row with no green frame says
    at which rank the right person comes (found in ``result``'s columns past ``k``: search
    deeper than you draw, up to the whole gallery, to get the exact rank).

    Args:
        queries: ``Nq`` query captions (the rows).
        result: the :class:`~textreid.retrieval.SearchResult` of those queries (``[Nq, K]``).
        image_paths: path of every gallery item (indexed by ``result.indices``).
        out: output image path; its extension picks the format (``.png``, ``.jpg``, ...).
        query_pids, gallery_pids: identities, to colour the frames and find the right person.
        k: images drawn per row, at most ``K``; default ``K``.
        thumb_size: ``(H, W)`` of each thumbnail.
        text_width: pixels reserved for the query text, which is wrapped by words.

    Returns:
        The written path.

    Raises:
        ValueError: ``out`` has no image extension Pillow can write, ``result`` does not
            have one row per query, ``k`` is out of range, or only one of ``query_pids`` and
            ``gallery_pids`` is given, or they do not match the queries or the gallery.
    """
    from PIL import Image, ImageDraw, ImageFont

    fn = "save_result_grid"
    path, image_format = _check_out(out, fn)
    indices = result.indices.cpu()
    scores = result.scores.cpu()
    if indices.dim() != 2 or indices.shape[0] != len(queries):
        raise ValueError(
            f"{fn}: result has {indices.shape[0] if indices.dim() else 0} rows but "
            f"{len(queries)} queries were given"
        )
    depth = indices.shape[1]
    shown = depth if k is None else k
    if isinstance(shown, bool) or not isinstance(shown, int) or not 1 <= shown <= depth:
        raise ValueError(f"{fn}: k must be an int in [1, {depth}] (result's columns); got {k!r}")
    if (query_pids is None) != (gallery_pids is None):
        raise ValueError(f"{fn}: query_pids and gallery_pids must be given together")
    if query_pids is not None and len(query_pids) != len(queries):
        raise ValueError(
            f"{fn}: query_pids has {len(query_pids)} entries but {len(queries)} queries were given"
        )
    if gallery_pids is not None and len(gallery_pids) != len(image_paths):
        raise ValueError(
            f"{fn}: gallery_pids has {len(gallery_pids)} entries but image_paths has "
            f"{len(image_paths)}"
        )

    font = ImageFont.load_default(size=_FONT_SIZE)
    gap = max(font.getlength(" "), _MIN_GAP_EM * _FONT_SIZE)
    _, top, _, bottom = font.getbbox("Ag")
    ascent, line_h = round(bottom - top), round(bottom) + 3
    th, tw = thumb_size
    pad = 6
    label_h = line_h + 2
    row_h = th + label_h + 2 * pad
    legend_h = line_h + 2 * pad if query_pids is not None else 0
    width = text_width + shown * (tw + pad) + pad
    canvas = Image.new("RGB", (width, legend_h + max(1, len(queries)) * row_h), "white")
    draw = ImageDraw.Draw(canvas)
    text_room = text_width - 2 * pad

    if legend_h:
        x, y = pad, pad
        for colour, words in ((_GREEN, "same person"), (_RED, "other person")):
            draw.rectangle((x, y + 1, x + ascent - 2, y + ascent - 1), outline=colour, width=3)
            x += ascent + 4
            _draw_lines(draw, (x, y), [words.split()], font, gap, line_h, _BLACK)
            x += round(_line_width(words.split(), font.getlength, gap)) + 3 * pad

    for r, query in enumerate(queries):
        y = legend_h + r * row_h + pad
        ranked = indices[r].tolist()
        note = None
        if query_pids is not None and gallery_pids is not None:
            note = _rank_note([gallery_pids[g] for g in ranked], query_pids[r], shown, gallery_pids)
        note_lines = _wrap_words(note, font.getlength, text_room, gap) if note else []
        max_lines = max(0, (row_h - pad) // line_h - len(note_lines))
        lines = _fit_lines(
            _wrap_words(query, font.getlength, text_room, gap),
            max_lines,
            font.getlength,
            text_room,
            gap,
        )
        _draw_lines(draw, (pad, y), lines, font, gap, line_h, _BLACK)
        _draw_lines(draw, (pad, y + len(lines) * line_h), note_lines, font, gap, line_h, _RED)
        for c in range(shown):
            g = ranked[c]
            x = text_width + c * (tw + pad)
            with Image.open(image_paths[g]) as img:
                thumb = img.convert("RGB").resize((tw, th))
            canvas.paste(thumb, (x, y))
            colour = _GREY
            if query_pids is not None and gallery_pids is not None:
                colour = _GREEN if gallery_pids[g] == query_pids[r] else _RED
            draw.rectangle((x - 2, y - 2, x + tw + 1, y + th + 1), outline=colour, width=3)
            label = [f"#{c + 1}", f"{float(scores[r, c]):.2f}"]
            _draw_lines(draw, (x, y + th + 3), [label], font, gap, line_h, colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format=image_format)
    return path
