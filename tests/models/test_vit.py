"""Vision and text towers: shapes, token order, pooling, causality, input validation."""

from __future__ import annotations

import pytest
import torch

from textreid.config import TextConfig, VisionConfig
from textreid.models import TextTransformer, VisionTransformer


def _vit(**kw: object) -> VisionTransformer:
    args: dict[str, object] = dict(
        image_size=(64, 32), patch_size=16, width=32, layers=1, heads=2, act="quick_gelu"
    )
    args.update(kw)
    return VisionTransformer(VisionConfig(**args), embed_dim=24)  # type: ignore[arg-type]


def _text(**kw: object) -> TextTransformer:
    args: dict[str, object] = dict(
        context_length=12, vocab_size=100, width=32, layers=2, heads=2, act="gelu"
    )
    args.update(kw)
    return TextTransformer(TextConfig(**args), embed_dim=24)  # type: ignore[arg-type]


def test_non_square_overlapping_grid_shapes() -> None:
    vit = _vit(image_size=(384, 128), stride=12, layers=0)
    assert vit.grid_size == (31, 10)
    assert vit.positional_embedding.shape == (1 + 310, 32)
    pooled, tokens = vit(torch.randn(2, 3, 384, 128), return_tokens=True)
    assert pooled.shape == (2, 24)
    assert tokens.shape == (2, 311, 24)
    assert torch.equal(pooled, tokens[:, 0])
    assert torch.equal(vit(torch.zeros(1, 3, 384, 128)), vit(torch.zeros(1, 3, 384, 128)))


def test_tokens_are_row_major() -> None:
    # Without blocks a patch token depends only on its own patch.
    vit = _vit(image_size=(48, 32), layers=0).eval()
    images = torch.randn(1, 3, 48, 32)
    _, base = vit(images, return_tokens=True)
    n_w = vit.grid_size[1]
    for r, c in [(0, 1), (2, 0), (1, 1)]:
        changed = images.clone()
        changed[..., r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] += 1.0
        _, tokens = vit(changed, return_tokens=True)
        diff = (tokens - base).abs().sum(-1)[0]
        assert diff.nonzero().flatten().tolist() == [1 + r * n_w + c]


def test_deterministic_given_seed() -> None:
    torch.manual_seed(3)
    a = _vit()
    torch.manual_seed(3)
    b = _vit()
    x = torch.randn(2, 3, 64, 32)
    assert torch.equal(a(x), b(x))


def test_image_errors() -> None:
    vit = _vit()
    with pytest.raises(
        ValueError,
        match=r"images are \(64, 64\) \(H, W\) but the model is configured for \(64, 32\)",
    ):
        vit(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="must have 3 channels"):
        vit(torch.randn(1, 1, 64, 32))
    with pytest.raises(ValueError, match=r"must be 4-D \(B, 3, H, W\)"):
        vit(torch.randn(3, 64, 32))
    with pytest.raises(TypeError, match="floating dtype"):
        vit(torch.zeros(1, 3, 64, 32, dtype=torch.uint8))


def test_text_pools_at_argmax_and_is_causal() -> None:
    text = _text().eval()
    ids = torch.tensor([[5, 7, 99, 0, 0, 0], [5, 99, 3, 4, 0, 0]])
    pooled, tokens = text(ids, return_tokens=True)
    assert tokens.shape == (2, 6, 24)
    assert torch.equal(pooled, tokens[torch.arange(2), torch.tensor([2, 1])])
    # Positions after the end-of-text token cannot change the pooled feature.
    changed = ids.clone()
    changed[:, 4:] = 42
    torch.testing.assert_close(text(changed), pooled)
    # Shorter inputs equal the prefix of padded ones.
    torch.testing.assert_close(text(ids[:1, :3], return_tokens=True)[1], tokens[:1, :3])


def test_text_errors() -> None:
    text = _text()
    with pytest.raises(ValueError, match="ids has 13 tokens per row but the context length is 12"):
        text(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 100\)"):
        text(torch.tensor([[1, 100]]))
    with pytest.raises(TypeError, match="integer tensor"):
        text(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="empty batch"):
        text(torch.zeros(0, 4, dtype=torch.long))


def test_text_init_follows_openai() -> None:
    torch.manual_seed(0)
    text = _text(width=64, context_length=77, vocab_size=2000, layers=4)
    assert float(text.token_embedding.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    assert float(text.positional_embedding.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(text.text_projection.detach().std()) == pytest.approx(64**-0.5, rel=0.15)
    c_proj = text.transformer.resblocks[0].mlp.c_proj.weight  # type: ignore[union-attr]
    assert float(c_proj.detach().std()) == pytest.approx(64**-0.5 * 8**-0.5, rel=0.05)
