"""Fixture writers for the benchmark formats (tiny files in each benchmark's exact layout)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

# The three layouts: (benchmark folder, annotation file name, image path field).
LAYOUTS = {
    "cuhk-pedes": ("CUHK-PEDES", "reid_raw.json", "file_path"),
    "icfg-pedes": ("ICFG-PEDES", "ICFG-PEDES.json", "file_path"),
    "rstpreid": ("RSTPReid", "data_captions.json", "img_path"),
}


def write_benchmark(
    root: Path,
    name: str,
    entries: list[dict[str, Any]],
    *,
    images: bool = True,
    file_name: str | None = None,
) -> Path:
    """Write ``entries`` as ``root/<folder>/<annotation>`` plus a 4x2 PNG per image path."""
    folder_name, anno_name, path_field = LAYOUTS[name]
    folder = root / folder_name
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    (folder / (file_name or anno_name)).write_text(json.dumps(entries), encoding="utf-8")
    if images:
        for i, entry in enumerate(entries):
            rel = entry.get(path_field)
            if isinstance(rel, str):
                path = folder / "imgs" / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (2, 4), (10 * i % 256, 20, 30)).save(path)
    return folder


def cuhk_entry(split: str, pid: int, path: str, captions: list[str]) -> dict[str, Any]:
    """A CUHK-PEDES ``reid_raw.json`` entry, with its (unused) ``processed_tokens`` field."""
    return {
        "split": split,
        "captions": captions,
        "file_path": path,
        "processed_tokens": [re.findall(r"[a-z]+", c.lower()) for c in captions],
        "id": pid,
    }


def word_tokenizer(captions: list[str]) -> torch.Tensor:
    """A stand-in tokenizer: letters of each word summed, padded to 8 tokens."""
    out = torch.zeros(len(captions), 8, dtype=torch.long)
    for i, c in enumerate(captions):
        ids = [sum(map(ord, w)) for w in c.split()][:8]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


@pytest.fixture
def cuhk_entries() -> list[dict[str, Any]]:
    """Mixed split order, 3 captions on one image, ids starting at 1 as in the real file."""
    return [
        cuhk_entry("train", 2, "CUHK01/0002001.png", ["b one", "b two"]),
        cuhk_entry("test", 7, "test_query/p7_s1.jpg", ["t seven a", "t seven b"]),
        cuhk_entry("train", 1, "CUHK01/0001001.png", ["a one", "a two", "a three"]),
        cuhk_entry("val", 5, "cam_a/005_0.bmp", ["v five"]),
        cuhk_entry("train", 2, "CUHK03/2_1.png", ["b three", "b four"]),
        cuhk_entry("test", 7, "test_query/p7_s2.jpg", ["t seven c"]),
        cuhk_entry("test", 9, "Market/0009_c1.jpg", ["t nine"]),
        cuhk_entry("train", 3, "cam_b/003_1.bmp", ["c one", "c two"]),
    ]
