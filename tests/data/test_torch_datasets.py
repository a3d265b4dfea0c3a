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
    collate_trimmed,
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


def test_collate_trimmed_cuts_only_the_columns_that_are_padding_in_every_row() -> None:
    # Token 0 is padding after the end token (the largest id) but a real symbol before it.
    rows = [[9, 4, 0, 12, 0, 0, 0], [9, 12, 0, 0, 0, 0, 0], [9, 0, 0, 5, 12, 0, 0]]
    items = [
        {"text_ids": torch.tensor(r), "pids": torch.tensor(i), "images": torch.full((3, 2, 1), i)}
        for i, r in enumerate(rows)
    ]
    batch = collate_trimmed(items)
    assert batch["text_ids"].tolist() == [r[:5] for r in rows]
    assert batch["text_ids"].is_contiguous()
    assert batch["pids"].tolist() == [0, 1, 2]
    assert torch.equal(batch["images"][:, 0, 0, 0], torch.tensor([0, 1, 2]))
    full = [{"text_ids": torch.tensor([9, 3, 12])}, {"text_ids": torch.tensor([9, 12, 0])}]
    assert collate_trimmed(full)["text_ids"].shape == (2, 3)


def test_trimmed_batches_encode_as_the_padded_ones() -> None:
    from textreid.models import create_model
    from textreid.tokenization import CLIPTokenizer

    tok = CLIPTokenizer(context_length=77)
    captions = ["a man in a red coat!", "she wears black trousers and white shoes", "hi"]
    items = [{"text_ids": tok([c])[0]} for c in captions]
    padded = torch.stack([i["text_ids"] for i in items])
    trimmed = collate_trimmed(items)["text_ids"]
    assert trimmed.shape[1] == int((padded != 0).sum(1).max()) < 77
    torch.manual_seed(0)
    model = create_model("tiny").eval()
    with torch.no_grad():
        a, a_tokens = model.encode_text(padded, return_tokens=True)
        b, b_tokens = model.encode_text(trimmed, return_tokens=True)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)  # float rounding only
    torch.testing.assert_close(b_tokens, a_tokens[:, : trimmed.shape[1]], rtol=0, atol=1e-5)


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


def test_recipe_loader_trims_caption_batches_when_the_recipe_says_so(tmp_path: Path) -> None:
    import dataclasses

    from textreid.data import build_dataset, write_synthpedes
    from textreid.pipeline import _train_loader, build_tokenizer
    from textreid.recipes import get_recipe

    write_synthpedes(tmp_path, num_identities=12, images_per_identity=2, image_size=(48, 24))
    data = build_dataset("synthpedes", tmp_path)
    base = get_recipe("tiny-irra")
    assert base.data.trim_text
    tok = build_tokenizer(base, 77, train_captions=[s.caption for s in data.train])
    for trim in (False, True):
        settings = dataclasses.replace(base.data, trim_text=trim, image_size=(48, 24), batch_size=8)
        ids = next(iter(_train_loader(base.replace(data=settings), data, tok)))["text_ids"]
        if trim:
            assert ids.shape[1] < 77
            assert bool(ids[:, -1].ne(0).any())  # the longest caption's end token is kept
        else:
            assert ids.shape[1] == 77
