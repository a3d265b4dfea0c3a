"""PartQueryDecoder: shapes, shared weights, modality-specific norms, masks, gradients."""

from __future__ import annotations

import pytest
import torch

from textreid.models.part_decoder import PartEmbeddings, PartQueryDecoder


def test_shapes_and_split() -> None:
    dec = PartQueryDecoder(num_queries=6, dim=16, depth=1, num_coarse=2, heads=2)
    out = dec(torch.randn(3, 9, 16), "image")
    assert isinstance(out, PartEmbeddings)
    assert out.coarse.shape == (3, 2, 16)
    assert out.fine.shape == (3, 4, 16)


def test_modalities_share_all_but_kv_norms() -> None:
    dec = PartQueryDecoder(num_queries=3, dim=8, depth=1, num_coarse=1, heads=2)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        dec.ln_kv["text"].weight.mul_(2.0)
    a, b = dec(x, "image"), dec(x, "text")
    assert not torch.allclose(a.fine, b.fine)
    with torch.no_grad():
        dec.ln_kv["text"].weight.copy_(dec.ln_kv["image"].weight)
    torch.testing.assert_close(dec(x, "text").fine, a.fine)


def test_key_mask_ignores_padding() -> None:
    dec = PartQueryDecoder(num_queries=4, dim=8, depth=2, num_coarse=1, heads=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    base = dec(x, "text", torch.ones(2, 5, dtype=torch.bool))
    xp = torch.cat([x, 1e3 * torch.randn(2, 3, 8, dtype=torch.float64)], dim=1)
    mask = torch.cat([torch.ones(2, 5), torch.zeros(2, 3)], dim=1).bool()
    out = dec(xp, "text", mask)
    torch.testing.assert_close(out.coarse, base.coarse)
    torch.testing.assert_close(out.fine, base.fine)


def test_gradient_reaches_every_parameter() -> None:
    dec = PartQueryDecoder(num_queries=4, dim=8, depth=1, num_coarse=1, heads=2)
    a, b = dec(torch.randn(2, 5, 8), "image"), dec(torch.randn(2, 6, 8), "text")
    (
        a.coarse.square().sum()
        + a.fine.square().sum()
        + b.fine.square().sum()
        + b.coarse.square().sum()
    ).backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_errors() -> None:
    dec = PartQueryDecoder(num_queries=4, dim=8, heads=2)
    with pytest.raises(ValueError, match="width 6 but the decoder has dim 8"):
        dec(torch.randn(2, 5, 6), "image")
    with pytest.raises(ValueError, match="modality must be one of"):
        dec(torch.randn(2, 5, 8), "audio")
    with pytest.raises(ValueError, match="num_coarse 5 exceeds num_queries 4"):
        PartQueryDecoder(num_queries=4, dim=8, num_coarse=5)
    with pytest.raises(ValueError, match="key_mask has shape"):
        dec(torch.randn(2, 5, 8), "image", torch.ones(2, 4, dtype=torch.bool))
