"""Pooling. TextConfig(pool="mean" | "max"): the caption feature is the mean / per-channel
maximum of the projected tokens from the start token to the end-of-text token; padding never
counts. VisionConfig(pool="max"): the image feature is the per-channel maximum of every
projected token. Models save and load; exports that cannot express them refuse."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from textreid import Retriever
from textreid.config import TextConfig
from textreid.models import CLIPDualEncoder, clip_config_to_hf_dict, create_model

EOT = 99  # the largest id in use, as CLIP's end-of-text token is


def _model(pool: str) -> CLIPDualEncoder:
    torch.manual_seed(0)
    model = create_model("tiny", text={"vocab_size": 100, "pool": pool})
    return model.eval()


def _rows() -> list[list[int]]:
    # Id 0 is a real token where it stands before the end token (CLIP's "!"), padding after.
    return [[98, 5, 0, 7, EOT], [98, 3, EOT], [98, 0, 0, 0, 4, 6, EOT]]


def _padded(rows: list[list[int]], length: int) -> torch.Tensor:
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
    return ids


@pytest.mark.parametrize(
    ("pool", "reduce"),
    [("mean", lambda t: t.mean(0)), ("max", lambda t: t.max(0).values)],
)
def test_pool_equals_each_caption_encoded_alone_without_padding(pool: str, reduce: Any) -> None:
    model = _model(pool)
    rows = _rows()
    with torch.no_grad():
        batch = model.encode_text(_padded(rows, 77))
        for b, row in enumerate(rows):
            # An independent path: one row of exactly its own length, no padding at all, and
            # a plain reduction of its token outputs.
            _, tokens = model.encode_text(torch.tensor([row]), return_tokens=True)
            torch.testing.assert_close(batch[b], reduce(tokens[0]), rtol=1e-5, atol=1e-6)


def test_max_pool_takes_each_channel_from_its_own_position() -> None:
    model = _model("max")
    with torch.no_grad():
        pooled, tokens = model.encode_text(_padded(_rows(), 9), return_tokens=True)
    winners = {int(p) for p in tokens[0, :5].argmax(0)}
    assert len(winners) > 1  # the feature is no single position's output
    assert torch.equal(pooled[0], tokens[0, :5].amax(0))


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_pool_ignores_padding_and_reads_every_real_token(pool: str) -> None:
    model = _model(pool)
    ids = _padded(_rows(), 12)
    with torch.no_grad():
        base = model.encode_text(ids)
        trimmed = model.encode_text(ids[:, :7])
        after = ids.clone()
        after[1, 5] = 17  # past row 1's end token
        before = ids.clone()
        before[0, 1] = 17  # a word of row 0
        changed_after, changed_before = model.encode_text(after), model.encode_text(before)
    torch.testing.assert_close(trimmed, base, rtol=1e-5, atol=1e-6)
    assert torch.equal(changed_after[1], base[1])
    assert not torch.allclose(changed_before[0], base[0])
    assert torch.equal(changed_before[1:], base[1:])


def test_eot_pool_is_the_end_token_output_and_differs_from_the_mean() -> None:
    eot_model, mean_model = _model("eot"), _model("mean")
    assert eot_model.config.text.pool == "eot"
    mean_model.load_state_dict(eot_model.state_dict())  # same weights, only pooling differs
    ids = _padded(_rows(), 9)
    with torch.no_grad():
        pooled, tokens = eot_model.encode_text(ids, return_tokens=True)
        mean_pooled, mean_tokens = mean_model.encode_text(ids, return_tokens=True)
    ends = torch.tensor([4, 2, 6])
    assert torch.equal(pooled, tokens[torch.arange(3), ends])
    assert torch.equal(mean_tokens, tokens)
    assert not torch.allclose(mean_pooled, pooled)


def test_config_checks_pool_and_old_configs_default_to_eot() -> None:
    text = create_model("tiny", device="meta").config.text
    with pytest.raises(ValueError, match="pool"):
        dataclasses.replace(text, pool="first")  # type: ignore[arg-type]
    old = {k: v for k, v in text.to_dict().items() if k != "pool"}
    assert TextConfig.from_dict(old).pool == "eot"
    mean = dataclasses.replace(text, pool="mean")
    assert TextConfig.from_dict(mean.to_dict()) == mean


def test_a_mean_pool_retriever_saves_and_loads_exactly(tmp_path: Path) -> None:
    model = _model("mean")
    folder = Retriever(model).save_pretrained(tmp_path / "saved")
    loaded = Retriever.from_pretrained(folder)
    assert loaded.model.config.text.pool == "mean"
    ids = _padded(_rows(), 10)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_text(ids), model.encode_text(ids))


def test_image_max_pool_is_the_channel_maximum_of_the_cls_models_tokens() -> None:
    torch.manual_seed(0)
    cls_model = create_model("tiny").eval()
    max_model = create_model("tiny", vision={"pool": "max"}).eval()
    max_model.load_state_dict(cls_model.state_dict())  # same weights, only pooling differs
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        cls_pooled, tokens = cls_model.encode_image(images, return_tokens=True)
        max_pooled, max_tokens = max_model.encode_image(images, return_tokens=True)
    assert torch.equal(cls_pooled, tokens[:, 0])
    assert torch.equal(max_tokens, tokens)
    assert torch.equal(max_pooled, tokens.max(1).values)
    assert len({int(p) for p in tokens[0].argmax(0)}) > 1  # no single token's output


def test_image_pool_config_and_save_load(tmp_path: Path) -> None:
    vision = create_model("tiny", device="meta").config.vision
    assert vision.pool == "cls"
    with pytest.raises(ValueError, match="pool"):
        dataclasses.replace(vision, pool="mean")  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = create_model("tiny", vision={"pool": "max"}).eval()
    loaded = Retriever.from_pretrained(Retriever(model).save_pretrained(tmp_path / "saved"))
    assert loaded.model.config.vision.pool == "max"
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_image(images), model.encode_image(images))


@pytest.mark.parametrize(
    ("vision", "text", "named"),
    [
        ({}, {"pool": "mean"}, "'mean'"),
        ({}, {"pool": "max"}, "'max'"),
        ({"pool": "max"}, {}, "'max'"),
        ({"stem": "conv", "patch_size": 8}, {}, "'conv'"),
    ],
)
def test_hf_export_refuses_what_hf_clip_cannot_compute(
    vision: dict[str, object], text: dict[str, object], named: str
) -> None:
    config = create_model(
        "tiny", image_size=(64, 64), vision=vision, text=text, device="meta"
    ).config
    with pytest.raises(ValueError, match=named):
        clip_config_to_hf_dict(config)
    clip_config_to_hf_dict(create_model("tiny", image_size=(64, 64), device="meta").config)
