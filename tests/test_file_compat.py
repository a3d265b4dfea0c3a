"""Files written by textreid 0.1 (format version 1) must keep loading, with the same results.

The fixtures in ``tests/fixtures/compat/v1`` were written once by ``make_fixtures.py``; never
regenerate them in place. A new format version adds a new folder and a new test: ``v2`` holds
the single-file gallery index.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from textreid import GalleryIndex, Retriever
from textreid.training.checkpoint import load_checkpoint

V1 = Path(__file__).parent / "fixtures" / "compat" / "v1"
V2 = V1.parent / "v2"
sys.path.insert(0, str(V1.parent))
from make_fixtures import CAPTION, probe_image  # noqa: E402


@pytest.fixture(scope="module")
def expected() -> dict[str, list[float]]:
    data: dict[str, list[float]] = json.loads((V1 / "expected.json").read_text())
    return data


def test_v1_retriever_loads_and_embeds_as_recorded(expected: dict[str, list[float]]) -> None:
    r = Retriever.from_pretrained(V1 / "retriever")
    torch.testing.assert_close(
        r.encode_text([CAPTION])[0], torch.tensor(expected["text"]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        r.encode_images(probe_image())[0], torch.tensor(expected["image"]), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("folder", [V1 / "gallery", V2 / "gallery"], ids=["v1", "v2"])
def test_gallery_index_loads_and_searches(folder: Path, expected: dict[str, list[float]]) -> None:
    index = GalleryIndex.load(folder)
    assert len(index) == 5
    hits = index.search(torch.tensor([expected["gallery_query"]]), k=2)
    assert int(hits.indices[0, 0]) == 2
    assert index.ids_of(hits)[0, 0].item() == 4
    assert index.paths_of(hits)[0][0] == "img2.png"


def test_v1_checkpoint_loads() -> None:
    ckpt = load_checkpoint(V1 / "checkpoint.pt")
    assert ckpt["format_version"] == 1
    assert ckpt["epoch"] == 2
    assert torch.equal(ckpt["model"]["w"], torch.arange(4.0))


@pytest.mark.parametrize("what", ["retriever", "gallery"])
def test_a_future_version_is_refused(what: str, tmp_path: Path) -> None:
    folder = tmp_path / what
    shutil.copytree(V1 / what, folder)
    meta = folder / ("config.json" if what == "retriever" else "index.json")
    data = json.loads(meta.read_text())
    data["format_version"] = 99
    meta.write_text(json.dumps(data))
    load = Retriever.from_pretrained if what == "retriever" else GalleryIndex.load
    with pytest.raises(ValueError, match="format_version 99"):
        load(folder)


def test_a_future_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = load_checkpoint(V1 / "checkpoint.pt")
    ckpt["format_version"] = 99
    torch.save(ckpt, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="format_version 99"):
        load_checkpoint(tmp_path / "c.pt")
