"""save_result_grid: word layout, frame and legend colours, the right person's rank, output."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from textreid.retrieval.search import SearchResult
from textreid.visualize import _rank_note, _wrap_words, save_result_grid

GREEN = (46, 160, 67)
RED = (214, 39, 40)
TEXT_WIDTH = 260
THUMB = (40, 20)  # (H, W)
PAD = 6


@pytest.fixture
def gallery(tmp_path: Path) -> list[str]:
    """Six flat grey images: any saturated green or red in a grid is drawn, not pasted."""
    paths = []
    for i in range(6):
        p = tmp_path / f"g{i}.png"
        Image.new("RGB", (16, 32), (90 + 10 * i,) * 3).save(p)
        paths.append(str(p))
    return paths


def _result(rows: list[list[int]]) -> SearchResult:
    idx = torch.tensor(rows)
    scores = torch.linspace(1.0, 0.0, idx.shape[1]).expand(idx.shape[0], -1).contiguous()
    return SearchResult(scores, idx)


def _is(colour: tuple[int, int, int], px: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(colour, px[:3]))


def _count(img: Image.Image, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> int:
    x0, y0, x1, y1 = box
    return sum(_is(colour, img.getpixel((x, y))) for x in range(x0, x1) for y in range(y0, y1))


def _ink_runs(img: Image.Image, box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """Column runs ``[start, end)`` of a box that hold any dark pixel."""
    x0, y0, x1, y1 = box
    inked = [any(sum(img.getpixel((x, y))[:3]) < 450 for y in range(y0, y1)) for x in range(x0, x1)]
    runs: list[tuple[int, int]] = []
    for x, ink in enumerate(inked, start=x0):
        if ink and (not runs or runs[-1][1] != x):
            runs.append((x, x + 1))
        elif ink:
            runs[-1] = (runs[-1][0], x + 1)
    return runs


def _measure(s: str) -> float:
    return 7.0 * len(s)


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12), max_size=30),
    width=st.integers(7, 120),
    gap=st.integers(0, 9),
)
def test_wrap_keeps_every_character_and_fills_lines_greedily(
    words: list[str], width: int, gap: int
) -> None:
    lines = _wrap_words("  ".join(words), _measure, width, gap)
    assert "".join(p for line in lines for p in line) == "".join(words)
    for line in lines:
        assert line, "no empty line"
        assert sum(map(_measure, line)) + gap * (len(line) - 1) <= width
    for line, nxt in itertools.pairwise(lines):
        # Greedy: the next line's first piece did not fit after this one.
        assert sum(map(_measure, line)) + gap * len(line) + _measure(nxt[0]) > width
    # A word that fits the width is never cut.
    pieces = [p for line in lines for p in line]
    for w in words:
        if _measure(w) <= width:
            assert w in pieces


def test_words_are_drawn_with_visible_gaps(gallery: list[str], tmp_path: Path) -> None:
    # The built-in font's own space is ~2 px at this size: "This young" read "Thisyoung".
    out = save_result_grid(
        ["ll ll ll"], _result([[0]]), gallery, tmp_path / "g.png", thumb_size=THUMB
    )
    with Image.open(out) as img:
        runs = _ink_runs(img.convert("RGB"), (0, PAD, TEXT_WIDTH - PAD, PAD + 14))
    words: list[tuple[int, int]] = []
    for run in runs:  # letters of one word stand at most 2 px apart
        if words and run[0] - words[-1][1] <= 2:
            words[-1] = (words[-1][0], run[1])
        else:
            words.append(run)
    assert len(words) == 3, runs
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(words)]
    assert min(gaps) >= 4, gaps


def test_long_query_wraps_inside_its_column(gallery: list[str], tmp_path: Path) -> None:
    query = " ".join(["pedestrian"] * 40)
    out = save_result_grid([query], _result([[0]]), gallery, tmp_path / "g.png", thumb_size=THUMB)
    with Image.open(out) as img:
        rgb = img.convert("RGB")
        # Several lines of text, and no ink between the text column and the thumbnail frame.
        assert len({y for y in range(rgb.height) if _ink_runs(rgb, (0, y, 60, y + 1))}) > 20
        assert not _ink_runs(rgb, (TEXT_WIDTH - PAD, 0, TEXT_WIDTH - 3, rgb.height))


def test_frames_are_green_for_the_queried_person_and_a_legend_says_so(
    gallery: list[str], tmp_path: Path
) -> None:
    out = save_result_grid(
        ["a", "b"],
        _result([[0, 1], [2, 3]]),
        gallery,
        tmp_path / "g.png",
        query_pids=[7, 8],
        gallery_pids=[7, 5, 5, 8, 1, 1],
        thumb_size=THUMB,
    )
    plain = save_result_grid(
        ["a", "b"], _result([[0, 1], [2, 3]]), gallery, tmp_path / "p.png", thumb_size=THUMB
    )
    with Image.open(out) as img, Image.open(plain) as ref:
        rgb, ref_rgb = img.convert("RGB"), ref.convert("RGB")
        legend_h = rgb.height - ref_rgb.height
        assert legend_h > 0
        # Legend: a green and a red swatch on the top band, nowhere in the plain grid.
        band = (0, 0, rgb.width, legend_h)
        assert _count(rgb, GREEN, band) > 10
        assert _count(rgb, RED, band) > 10
        assert _count(ref_rgb, GREEN, (0, 0, *ref_rgb.size)) == 0
        assert _count(ref_rgb, RED, (0, 0, *ref_rgb.size)) == 0
        row_h = ref_rgb.height // 2
        # Frames sit 2 px outside each thumbnail; read the left edge mid-height.
        expect = [[GREEN, RED], [RED, GREEN]]
        for r in range(2):
            for c in range(2):
                x = TEXT_WIDTH + c * (THUMB[1] + PAD) - 1
                y = legend_h + r * row_h + PAD + THUMB[0] // 2
                assert _is(expect[r][c], rgb.getpixel((x, y)), tol=2), (r, c)


def test_rank_note_cases() -> None:
    assert _rank_note([1, 2, 3], 2, shown=2, gallery_pids=[1, 2, 3]) is None
    assert _rank_note([1, 2, 3, 4], 4, shown=2, gallery_pids=[1, 2, 3, 4]) == (
        "right person at rank 4"
    )
    assert _rank_note([1, 2], 4, shown=2, gallery_pids=[1, 2, 3, 4]) == (
        "right person not in the top 2"
    )
    assert _rank_note([1, 2], 9, shown=2, gallery_pids=[1, 2, 3]) == (
        "right person not in the gallery"
    )


def test_a_row_without_its_person_in_the_top_k_says_where_it_ranks(
    gallery: list[str], tmp_path: Path
) -> None:
    # Both rows searched six deep, two drawn: row 0 finds its person first, row 1 at rank 5.
    result = _result([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 0, 5]])
    out = save_result_grid(
        ["a", "b"],
        result,
        gallery,
        tmp_path / "g.png",
        query_pids=[7, 7],
        gallery_pids=[7, 1, 2, 3, 4, 5],
        k=2,
        thumb_size=THUMB,
    )
    plain = save_result_grid(["a", "b"], result, gallery, tmp_path / "p.png", k=2, thumb_size=THUMB)
    with Image.open(out) as img, Image.open(plain) as ref:
        rgb = img.convert("RGB")
        assert rgb.width == ref.width == TEXT_WIDTH + 2 * (THUMB[1] + PAD) + PAD
        legend_h, row_h = rgb.height - ref.height, ref.height // 2
        red_text = [
            _count(
                rgb, RED, (0, legend_h + r * row_h, TEXT_WIDTH - PAD, legend_h + (r + 1) * row_h)
            )
            for r in range(2)
        ]
    assert red_text[0] == 0
    assert red_text[1] > 20


def test_output_without_an_image_extension_is_refused_before_any_work(tmp_path: Path) -> None:
    missing = [str(tmp_path / "nope.png")]  # never opened: the check comes first
    with pytest.raises(ValueError, match=r"save_result_grid: out '.*grid' has no image file"):
        save_result_grid(["a"], _result([[0]]), missing, tmp_path / "grid")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("k", [0, 3, True])
def test_k_out_of_range_is_refused(gallery: list[str], tmp_path: Path, k: int) -> None:
    with pytest.raises(ValueError, match=r"save_result_grid: k must be an int in \[1, 2\]"):
        save_result_grid(["a"], _result([[0, 1]]), gallery, tmp_path / "g.png", k=k)


def test_pids_must_match_queries_and_gallery(gallery: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="query_pids has 2 entries but 1 queries"):
        save_result_grid(
            ["a"],
            _result([[0]]),
            gallery,
            tmp_path / "g.png",
            query_pids=[1, 2],
            gallery_pids=[0] * 6,
        )
    with pytest.raises(ValueError, match="gallery_pids has 5 entries but image_paths has 6"):
        save_result_grid(
            ["a"],
            _result([[0]]),
            gallery,
            tmp_path / "g.png",
            query_pids=[1],
            gallery_pids=[0] * 5,
        )


def test_jpeg_output_with_the_users_umask(gallery: list[str], tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = save_result_grid(["a b"], _result([[0]]), gallery, tmp_path / "sub" / "g.JPG")
    finally:
        os.umask(old)
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"
    assert out.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["g.JPG"]
