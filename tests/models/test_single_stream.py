"""SingleStreamEncoder and TokenDropper (IVT's BMM as released)."""

from __future__ import annotations

import random

import pytest
import torch

from textreid.models.single_stream import SingleStreamEncoder, TokenDropper, token_drop_indices


def _tiny(**kw: object) -> SingleStreamEncoder:
    return SingleStreamEncoder(
        image_size=(32, 16), patch_size=8, stride=6, vocab_size=50, max_text_len=12,
        width=16, depth=2, heads=2, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_drop_indices_match_ivt_released_code() -> None:
    # IVT model/backbones/vit_vl.py forward (HEAD f205788), percent 0.2, after random.seed(1234),
    # three successive calls with N = 193, 20, 311.
    rng = random.Random(1234)
    a = token_drop_indices(193, 0.2, rng)
    b = token_drop_indices(20, 0.2, rng)
    c = token_drop_indices(311, 0.2, rng)
    assert len(a) == 168
    assert a[:8] == [0, 32, 140, 177, 148, 93, 31, 155]
    assert sum(i * (k + 1) for k, i in enumerate(a)) == 1349580
    assert b == [0, 14, 15, 12, 2, 3, 10, 6, 18, 5, 19, 16, 9, 13, 7, 11]
    assert len(c) == 285
    assert c[:8] == [0, 4, 183, 272, 108, 65, 126, 117]
    assert sum(i * (k + 1) for k, i in enumerate(c)) == 6534711


def test_token_dropper_training_only_and_batch_shared() -> None:
    drop = TokenDropper(0.5, rng=torch.Generator().manual_seed(0))
    x = torch.arange(10.0)[None, :, None].repeat(3, 1, 2)
    mask = torch.ones(3, 10, dtype=torch.bool)
    y, m = drop(x, mask)
    assert m is not None
    assert y.shape[1] == m.shape[1]
    assert 5 <= y.shape[1] <= 10
    assert torch.all(y[:, 0] == 0)
    assert torch.equal(y[0], y[2])
    assert len(set(y[0, :, 0].tolist())) == y.shape[1]
    drop.eval()
    y2, m2 = drop(x, mask)
    assert y2 is x
    assert m2 is mask


def test_token_dropper_deterministic_under_seed() -> None:
    x = torch.randn(2, 30, 4)
    a, _ = TokenDropper(0.2, rng=random.Random(5))(x)
    b, _ = TokenDropper(0.2, rng=random.Random(5))(x)
    assert torch.equal(a, b)


def test_encoder_shapes_grid_and_cls_pooling() -> None:
    enc = _tiny().eval()
    assert enc.grid == (5, 2)
    assert enc.encode_image(torch.randn(2, 3, 32, 16)).shape == (2, 16)
    ids = torch.randint(1, 50, (2, 7))
    assert enc(ids, "text", torch.ones(2, 7, dtype=torch.bool)).shape == (2, 16)


def test_text_padding_never_changes_embedding() -> None:
    enc = _tiny().eval().double()
    ids = torch.randint(1, 50, (2, 6))
    base = enc.encode_text(ids, torch.ones(2, 6, dtype=torch.bool))
    padded = torch.cat([ids, torch.randint(0, 50, (2, 4))], dim=1)
    mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 4)], dim=1).bool()
    torch.testing.assert_close(enc.encode_text(padded, mask), base)


def test_modality_experts_and_gradients() -> None:
    enc = _tiny(rng=random.Random(0))
    enc.train()
    out = enc.encode_image(torch.randn(2, 3, 32, 16)).square().sum()
    out = out + enc.encode_text(torch.randint(1, 50, (2, 7))).square().sum()
    out.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    enc.zero_grad()
    enc.eval()
    enc.encode_text(torch.randint(1, 50, (2, 7))).sum().backward()
    blk = enc.blocks[0]
    assert blk.mlp_vis.c_fc.weight.grad is None or blk.mlp_vis.c_fc.weight.grad.abs().sum() == 0


def test_errors() -> None:
    enc = _tiny()
    with pytest.raises(ValueError, match="images must be"):
        enc.encode_image(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="ids must lie in"):
        enc.encode_text(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="13 positions but max_text_len is 12"):
        enc.encode_text(torch.ones(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        enc.encode_text(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="ratio must be below 1"):
        TokenDropper(1.0)
