"""GalleryIndex: add/search/ids/paths, save/load round trip, mmap, version and corruption errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from textreid.retrieval import GalleryIndex, topk_search


def _index(dtype: torch.dtype = torch.float32) -> GalleryIndex:
    gen = torch.Generator().manual_seed(0)
    index = GalleryIndex()
    index.add(
        torch.randn(5, 8, generator=gen).to(dtype),
        torch.arange(5),
        [f"img{i}.jpg" for i in range(5)],
    )
    index.add(
        torch.randn(4, 8, generator=gen).to(dtype),
        torch.arange(5, 9),
        [f"img{i}.jpg" for i in range(5, 9)],
    )
    return index


def test_add_search_and_names_of_hits() -> None:
    index = _index()
    assert len(index) == 9
    assert "9 items" in repr(index)
    q = torch.randn(3, 8)
    hits = index.search(q, 4, normalize=True)
    ref = topk_search(q, index.features, 4, normalize=True)
    assert torch.equal(hits.indices, ref.indices)
    assert torch.equal(index.ids_of(hits), hits.indices)  # ids are 0..8 here
    assert index.paths_of(hits)[0] == [f"img{j}.jpg" for j in hits.indices[0].tolist()]


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_save_load_round_trip(tmp_path: Path, mmap: bool, dtype: torch.dtype) -> None:
    index = _index(dtype)
    index.save(tmp_path / "gal")
    back = GalleryIndex.load(tmp_path / "gal", mmap=mmap)
    assert torch.equal(back.features, index.features)
    assert back.features.dtype == dtype
    assert back.ids is not None
    assert torch.equal(back.ids, torch.arange(9))
    assert back.paths == index.paths
    q = torch.randn(2, 8)
    assert torch.equal(back.search(q, 3).indices, index.search(q, 3).indices)
    back.add(
        torch.zeros(1, 8, dtype=dtype), torch.tensor([9]), ["new.jpg"]
    )  # the file is untouched
    again = GalleryIndex.load(tmp_path / "gal", mmap=mmap)
    assert len(again) == 9


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux /proc/self/maps")
def test_mmap_load_maps_the_file(tmp_path: Path) -> None:
    GalleryIndex(torch.randn(64, 4)).save(tmp_path)

    def mapped_file(ptr: int) -> str | None:
        for line in Path("/proc/self/maps").read_text().splitlines():
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return parts[-1] if len(parts) > 5 else None
        return None

    mapped = GalleryIndex.load(tmp_path, mmap=True)
    read = GalleryIndex.load(tmp_path, mmap=False)
    assert mapped.ids is None
    assert mapped.paths is None
    assert mapped_file(mapped.features.data_ptr()) == str(tmp_path / "gallery.safetensors")
    assert mapped_file(read.features.data_ptr()) != str(tmp_path / "gallery.safetensors")


def test_future_format_version_is_refused(tmp_path: Path) -> None:
    _index().save(tmp_path)
    meta = json.loads((tmp_path / "index.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match="format_version 99, but this textreid reads versions up to 1"
    ):
        GalleryIndex.load(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        GalleryIndex.load(tmp_path)


@pytest.mark.parametrize("mmap", [True, False])
def test_corrupt_files_are_refused(tmp_path: Path, mmap: bool) -> None:
    _index().save(tmp_path)
    data = (tmp_path / "gallery.safetensors").read_bytes()
    (tmp_path / "gallery.safetensors").write_bytes(data[:-16])  # truncated
    with pytest.raises(ValueError, match=r"gallery.safetensors is not a valid safetensors file"):
        GalleryIndex.load(tmp_path, mmap=mmap)
    (tmp_path / "gallery.safetensors").write_bytes(b"\xff" * 64)  # garbage header length
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        GalleryIndex.load(tmp_path, mmap=mmap)
    GalleryIndex(torch.randn(3, 8)).save(tmp_path / "other")
    (tmp_path / "gallery.safetensors").write_bytes(
        (tmp_path / "other" / "gallery.safetensors").read_bytes()
    )
    with pytest.raises(ValueError, match=r"has features of shape \(3, 8\), but .* says \(9, 8\)"):
        GalleryIndex.load(tmp_path, mmap=mmap)
    with pytest.raises(FileNotFoundError):
        GalleryIndex.load(tmp_path / "missing")


def test_add_errors() -> None:
    index = _index()
    with pytest.raises(
        ValueError, match=r"GalleryIndex.add: the index has ids, so every batch must match"
    ):
        index.add(torch.randn(1, 8), paths=["x"])
    with pytest.raises(ValueError, match="the index has paths, so every batch must match"):
        index.add(torch.randn(1, 8), torch.tensor([1]))
    with pytest.raises(
        ValueError, match=r"GalleryIndex.add: paths has 2 entries but feats has 1 rows"
    ):
        index.add(torch.randn(1, 8), torch.tensor([1]), ["a", "b"])
    with pytest.raises(ValueError, match="ids has 2 entries but feats has 1 rows"):
        index.add(torch.randn(1, 8), torch.tensor([1, 2]), ["a"])
    with pytest.raises(ValueError, match="the index has width 8 but feats has width 3"):
        index.add(torch.randn(1, 3), torch.tensor([1]), ["a"])
    with pytest.raises(ValueError, match=r"holds torch.float32 on cpu, but feats is torch.float64"):
        index.add(torch.randn(1, 8, dtype=torch.float64), torch.tensor([1]), ["a"])
    with pytest.raises(ValueError, match="the index is empty"):
        GalleryIndex().search(torch.randn(1, 8), 1)
    with pytest.raises(ValueError, match="ids or paths given without features"):
        GalleryIndex(ids=torch.tensor([1]))
    plain = GalleryIndex(torch.randn(3, 2))
    hits = plain.search(torch.randn(1, 2), 1)
    with pytest.raises(ValueError, match="has no ids"):
        plain.ids_of(hits)
    with pytest.raises(ValueError, match="has no paths"):
        plain.paths_of(hits)
