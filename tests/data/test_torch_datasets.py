"""Dataset dict contract, default collate, image loading errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _pedes_fixtures import word_tokenizer, write_benchmark
from torch.utils.data import DataLoader

from textreid.data import (
    ImageDataset,
    ImageTextDataset,
    TextDataset,
    build_transforms,
    load_image,
    read_cuhk_pedes,
)


@pytest.fixture
def data(tmp_path: Path, cuhk_entries: list[dict[str, Any]]) -> Any:
    write_benchmark(tmp_path, "cuhk-pedes", cuhk_entries)
    return read_cuhk_pedes(tmp_path)


def test_train_items_and_collate(data: Any) -> None:
    ds = ImageTextDataset(data.train, word_tokenizer, build_transforms((8, 4)))
    assert len(ds) == 9
    item = ds[2]
    assert set(item) == {"images", "text_ids", "pids", "image_ids", "index"}
    assert item["images"].shape == (3, 8, 4)
    assert item["images"].dtype == torch.float32
    assert item["text_ids"].dtype == torch.int64
    assert torch.equal(item["text_ids"], word_tokenizer(["a one"])[0])
    assert (item["pids"].item(), item["image_ids"].item(), item["index"].item()) == (0, 1, 2)
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["images"].shape == (5, 3, 8, 4)
    assert batch["text_ids"].shape == (5, 8)
    assert batch["pids"].tolist() == [1, 1, 0, 0, 0]
    assert batch["pids"].dtype == torch.int64
    assert batch["image_ids"].tolist() == [0, 0, 1, 1, 1]
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]


def test_gallery_and_query_items(data: Any) -> None:
    gallery = ImageDataset(data.test, build_transforms((8, 4)))
    queries = TextDataset(data.test, word_tokenizer)
    assert (len(gallery), len(queries)) == (3, 4)
    g = next(iter(DataLoader(gallery, batch_size=3)))
    assert set(g) == {"images", "pids", "index"}
    assert g["images"].shape == (3, 3, 8, 4)
    assert g["pids"].tolist() == [7, 7, 9]
    q = next(iter(DataLoader(queries, batch_size=4)))
    assert set(q) == {"text_ids", "pids", "index"}
    assert q["pids"].tolist() == [7, 7, 7, 9]
    assert q["index"].tolist() == [0, 1, 2, 3]
    assert torch.equal(q["text_ids"], word_tokenizer(data.test.captions))


def test_missing_and_corrupt_images(data: Any, tmp_path: Path) -> None:
    Path(data.test.img_paths[2]).unlink()
    gallery = ImageDataset(data.test, build_transforms((8, 4)))
    with pytest.raises(FileNotFoundError, match=r"image file .*Market/0009_c1.jpg does not exist"):
        gallery[2]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read .*bad.png as an image"):
        load_image(bad)


def test_load_image_converts_to_rgb(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "gray.png"
    Image.new("L", (3, 2), 7).save(path)
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (7, 7, 7)


def test_bad_tokenizer_and_transform(data: Any) -> None:
    ds = ImageTextDataset(
        data.train, lambda caps: torch.zeros(len(caps), 4), build_transforms((8, 4))
    )
    with pytest.raises(TypeError, match=r"must return int64 token ids, got torch\.float32"):
        ds[0]
    ds = ImageTextDataset(
        data.train, lambda caps: torch.zeros(4, dtype=torch.long), build_transforms((8, 4))
    )
    with pytest.raises(TypeError, match=r"LongTensor of shape \(1, L\), got \(4,\)"):
        ds[0]
    ds = ImageTextDataset(data.train, word_tokenizer, lambda img: img)
    with pytest.raises(TypeError, match="transform must turn a PIL image into a tensor"):
        ds[0]
