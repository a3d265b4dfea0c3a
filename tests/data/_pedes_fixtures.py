"""Writers for tiny files in each benchmark's exact layout, and a stand-in tokenizer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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
