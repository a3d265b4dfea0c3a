"""IVT's method: multi-level CMPM over a single-stream encoder with token dropping."""

from __future__ import annotations

import pytest
import torch

from tests.methods._helpers import CAPTIONS, SIZE, make_batch, params_without_grad
from textreid.losses import MultiLevelAlignmentLoss
from textreid.losses.functional import cmpm_loss
from textreid.methods import IVTMethod
from textreid.methods.ivt import _reaugment
from textreid.models.single_stream import SingleStreamEncoder
from textreid.tokenization import CLIPTokenizer


def _method(tokenizer: CLIPTokenizer) -> IVTMethod:
    torch.manual_seed(0)
    encoder = SingleStreamEncoder(
        image_size=SIZE, patch_size=16, stride=12, vocab_size=49408, max_text_len=77,
        width=32, depth=1, heads=2,
    )  # fmt: skip
    return IVTMethod(encoder, tokenizer)


def _explicit_batch(tokenizer: CLIPTokenizer) -> dict[str, torch.Tensor]:
    batch = make_batch(tokenizer)
    g = torch.Generator().manual_seed(1)
    batch["image_views"] = torch.randn(4, 3, 3, *SIZE, generator=g)
    words = tokenizer(["red shirt", "white dress", "gray coat", "yellow cap"])
    phrases = tokenizer(["blue jeans", "long hair", "an umbrella", "green shorts"])
    batch["text_levels"] = torch.stack([words, phrases, batch["text_ids"]], dim=1)
    return batch


def test_mla_term_is_cmpm_over_stacked_views_and_levels(tokenizer: CLIPTokenizer) -> None:
    m = _method(tokenizer).eval()  # eval: no token dropping, so features are reproducible
    batch = _explicit_batch(tokenizer)
    out = m(batch)
    assert list(out.terms) == ["mla"]
    torch.testing.assert_close(out.total.detach(), out.terms["mla"])
    with torch.no_grad():
        views = [m.encoder.encode_image(batch["image_views"][:, k]) for k in range(3)]
        levels = [m.encode_text(batch["text_levels"][:, k]) for k in range(3)]
        mla = MultiLevelAlignmentLoss()(views, levels, batch["pids"])
        flat = cmpm_loss(torch.cat(views), torch.cat(levels), batch["pids"].repeat(3))
    torch.testing.assert_close(out.terms["mla"], mla, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms["mla"], flat, rtol=1e-5, atol=1e-5)


def test_text_padding_is_masked_for_retrieval(tokenizer: CLIPTokenizer) -> None:
    m = _method(tokenizer).eval()
    ids = tokenizer(CAPTIONS[:1])
    longer = ids.clone()
    longer[0, ids[0].argmax() + 1 :] = 320  # garbage after the end token must not matter
    torch.testing.assert_close(m.encode_text(ids), m.encode_text(longer))


def test_derived_levels_are_clauses_of_the_caption(tokenizer: CLIPTokenizer) -> None:
    m = _method(tokenizer)
    ids = tokenizer(CAPTIONS)
    levels = m.derive_levels(ids)
    assert levels.shape == (4, 3, 77)
    assert torch.equal(levels[:, 2], ids)
    for b in range(4):
        caption = tokenizer.decode(ids[b])
        for k in (0, 1):
            text = tokenizer.decode(levels[b, k])
            assert text
            assert text in caption


def test_reaugmented_views_flip_or_erase_only() -> None:
    torch.manual_seed(2)
    images = torch.rand(64, 3, 8, 6) + 1  # strictly positive, so erased pixels are visible
    views = _reaugment(images)
    flipped = images.flip(-1)
    for x, v, f in zip(images, views, flipped, strict=True):
        base = x if torch.equal(v[v != 0], x[v != 0]) else f
        kept = v != 0
        assert torch.equal(v[kept], base[kept])
        assert (v == 0).float().mean() <= 0.45  # at most one box of <= 40 % of the area
    assert (views == 0).any(), "some sample should be erased"
    assert any(not torch.equal(v, x) and (v != 0).all() for v, x in zip(views, images, strict=True))


def test_every_parameter_gets_a_gradient_and_seeded_runs_repeat(
    tokenizer: CLIPTokenizer,
) -> None:
    m = _method(tokenizer)
    batch = make_batch(tokenizer)
    torch.manual_seed(5)
    a = m(batch)
    a.total.backward()
    assert params_without_grad(m) == []
    torch.manual_seed(5)
    b = m(batch)
    assert torch.equal(a.total, b.total)
    torch.manual_seed(6)
    assert not torch.equal(m(batch).total, a.total)  # fresh views, levels and dropped tokens


def test_not_a_dual_encoder_and_errors(tokenizer: CLIPTokenizer) -> None:
    m = _method(tokenizer)
    assert m.retrieval_encoder() is None
    batch = _explicit_batch(tokenizer)
    with pytest.raises(ValueError, match=r"image_views'\] must be \(4, 3, 3, H, W\)"):
        m({**batch, "image_views": batch["image_views"][:, :2]})
    with pytest.raises(ValueError, match=r"text_levels'\] must be \(4, 3, L\)"):
        m({**batch, "text_levels": batch["text_levels"][:, :1]})
    with pytest.raises(ValueError, match=r"IVTMethod: the batch has no \['text_ids'\]"):
        m({"images": batch["images"], "pids": batch["pids"]})
    with pytest.raises(TypeError, match="encoder must be a SingleStreamEncoder"):
        IVTMethod(torch.nn.Linear(2, 2), tokenizer)  # type: ignore[arg-type]
    small = SingleStreamEncoder(image_size=SIZE, vocab_size=100, width=32, depth=1, heads=2)
    with pytest.raises(ValueError, match="encoder's vocab_size is 100"):
        IVTMethod(small, tokenizer)
