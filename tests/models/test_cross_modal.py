"""CrossModalTransformer and MLMHead: shapes, IRRA names and init, masks, gradients."""

from __future__ import annotations

import pytest
import torch

from textreid.models.cross_modal import CrossModalTransformer, MLMHead


def test_shapes_names_and_init() -> None:
    m = CrossModalTransformer(width=32, depth=2, heads=4)
    out = m(torch.randn(2, 5, 32), torch.randn(2, 7, 32))
    assert out.shape == (2, 5, 32)
    keys = set(m.state_dict())
    assert {"cross_attn.in_proj_weight", "ln_pre_t.weight", "ln_pre_i.bias", "ln_post.weight",
            "cross_modal_transformer.resblocks.1.mlp.c_proj.weight"} <= keys  # fmt: skip
    assert m.cross_attn.in_proj_bias.abs().sum() == 0
    head = MLMHead(width=32, vocab_size=50, depth=2)
    assert {"dense.weight", "ln.weight", "fc.bias"} <= set(head.state_dict())
    assert head(out).shape == (2, 5, 50)


def test_irra_init_std() -> None:
    torch.manual_seed(0)
    m = CrossModalTransformer(width=512, depth=4, heads=8)
    assert m.cross_attn.in_proj_weight.std().item() == pytest.approx(512**-0.5, rel=0.02)
    assert m.cross_attn.out_proj.weight.std().item() == pytest.approx(0.015625, rel=0.02)
    head = MLMHead(width=512, vocab_size=1000, depth=4)
    assert head.dense.weight.std().item() == pytest.approx(0.03125, rel=0.02)
    assert head.fc.weight.std().item() == pytest.approx(0.015625, rel=0.02)


def test_padding_never_changes_real_outputs() -> None:
    m = CrossModalTransformer(width=16, depth=2, heads=2).double()
    t, i = torch.randn(2, 4, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    base = m(t, i, torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool))
    t_p = torch.cat([t, 1e3 * torch.randn(2, 3, 16, dtype=torch.float64)], dim=1)
    i_p = torch.cat([i, 1e3 * torch.randn(2, 2, 16, dtype=torch.float64)], dim=1)
    tm = torch.cat([torch.ones(2, 4), torch.zeros(2, 3)], dim=1).bool()
    im = torch.cat([torch.ones(2, 5), torch.zeros(2, 2)], dim=1).bool()
    torch.testing.assert_close(m(t_p, i_p, tm, im)[:, :4], base)


def test_gradient_reaches_every_parameter_and_determinism() -> None:
    m = CrossModalTransformer(width=16, depth=1, heads=2)
    head = MLMHead(width=16, vocab_size=11, depth=1)
    t, i = torch.randn(2, 4, 16), torch.randn(2, 5, 16)
    out = head(m(t, i))
    assert torch.equal(out, head(m(t, i)))
    out.square().sum().backward()
    for name, p in [*m.named_parameters(), *head.named_parameters()]:
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_errors() -> None:
    m = CrossModalTransformer(width=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="width 8 but the module has width 16"):
        m(torch.randn(2, 4, 8), torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="2 samples but image_tokens has 3"):
        m(torch.randn(2, 4, 16), torch.randn(3, 5, 16))
    with pytest.raises(ValueError, match="image_mask has shape"):
        m(
            torch.randn(2, 4, 16),
            torch.randn(2, 5, 16),
            image_mask=torch.ones(2, 4, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="x has width 8 but the head has width 16"):
        MLMHead(width=16, vocab_size=11)(torch.randn(1, 2, 8))
