"""GaussianEmbedding container and GaussianHead."""

from __future__ import annotations

import pytest
import torch

from textreid.heads import GaussianEmbedding, GaussianHead


def _emb(b: int = 4, d: int = 3, dtype: torch.dtype = torch.float32) -> GaussianEmbedding:
    return GaussianEmbedding(torch.randn(b, d, dtype=dtype), torch.randn(b, d, dtype=dtype))


def test_len_index_slice_and_mask() -> None:
    g = _emb(5, 3)
    assert len(g) == 5
    assert g.dim == 3
    one = g[2]
    assert one.mean.shape == (1, 3)
    torch.testing.assert_close(one.mean, g.mean[2:3])
    torch.testing.assert_close(g[-1].log_var, g.log_var[4:5])
    assert len(g[1:4]) == 3
    sel = g[torch.tensor([True, False, True, False, False])]
    torch.testing.assert_close(sel.log_var, g.log_var[[0, 2]])
    with pytest.raises(IndexError, match="index 5 out of range for 5 rows"):
        g[5]


def test_variance_std_uncertainty_hand_values() -> None:
    g = GaussianEmbedding(torch.zeros(2, 2), torch.log(torch.tensor([[1.0, 4.0], [0.25, 0.25]])))
    torch.testing.assert_close(g.std, torch.tensor([[1.0, 2.0], [0.5, 0.5]]))
    torch.testing.assert_close(g.variance, torch.tensor([[1.0, 4.0], [0.25, 0.25]]))
    torch.testing.assert_close(g.uncertainty(), torch.tensor([2.5, 0.25]))


def test_to_and_detach() -> None:
    m = torch.randn(2, 3, requires_grad=True)
    g = GaussianEmbedding(m, torch.zeros(2, 3))
    assert g.detach().mean.requires_grad is False
    assert g.to(torch.float64).log_var.dtype == torch.float64


def test_sample_determinism_and_moments() -> None:
    g = GaussianEmbedding(torch.tensor([[1.0, -2.0]]), torch.log(torch.tensor([[0.25, 4.0]])))
    a = g.sample(5, torch.Generator().manual_seed(3))
    b = g.sample(5, torch.Generator().manual_seed(3))
    assert a.shape == (1, 5, 2)
    torch.testing.assert_close(a, b)
    big = g.sample(200_000, torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(big.mean(0), g.mean[0], atol=0.02, rtol=0)
    torch.testing.assert_close(big.var(0), g.variance[0], atol=0, rtol=0.02)


def test_sample_gradients_reach_both_fields() -> None:
    m = torch.randn(2, 3, requires_grad=True)
    lv = torch.randn(2, 3, requires_grad=True)
    GaussianEmbedding(m, lv).sample(4).sum().backward()
    assert m.grad is not None
    assert lv.grad is not None
    assert lv.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("mean", "log_var", "err", "match"),
    [
        ([1.0], torch.zeros(1, 2), TypeError, "mean must be a torch.Tensor"),
        (torch.zeros(2), torch.zeros(2), ValueError, r"mean must be 2-D \(B, D\)"),
        (torch.zeros(2, 3), torch.zeros(2, 4), ValueError, "they must match"),
        (torch.zeros(2, 0), torch.zeros(2, 0), ValueError, "zero-sized embedding dimension"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64), ValueError, "dtype"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), TypeError, "floating dtype"),
    ],
)
def test_validation_errors(mean: object, log_var: object, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        GaussianEmbedding(mean, log_var)  # type: ignore[arg-type]


def test_sample_bad_k() -> None:
    with pytest.raises(ValueError, match="num_samples must be an int >= 1, got 0"):
        _emb().sample(0)


@pytest.mark.parametrize("pooling", ["first", "mean", "max", "attention"])
def test_head_tokens_and_pooled(pooling: str) -> None:
    head = GaussianHead(8, 6, token_pooling=pooling)  # type: ignore[arg-type]
    tokens = torch.randn(3, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [True] * 3 + [False] * 2])
    out = head(tokens, mask)
    assert out.mean.shape == (3, 6)
    assert out.log_var.shape == (3, 6)
    torch.testing.assert_close(out.mean.norm(dim=-1), torch.ones(3))
    # variances start at exp(init_log_var) whatever the input
    torch.testing.assert_close(out.log_var, torch.full((3, 6), -5.0))
    # padding must not change the result
    changed = tokens.clone()
    changed[1, 2:] = 100.0
    torch.testing.assert_close(head(changed, mask).mean, out.mean)
    pooled = head(torch.randn(3, 8))
    assert pooled.mean.shape == (3, 6)


def test_head_mean_pooling_hand_value() -> None:
    head = GaussianHead(2, 2, normalize_mean=False, token_pooling="mean", init_log_var=-1.0)
    with torch.no_grad():
        head.mean_proj.weight.copy_(torch.eye(2))
        head.mean_proj.bias.zero_()
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [50.0, 50.0]]])
    out = head(tokens, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(out.mean, torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(out.log_var, torch.tensor([[-1.0, -1.0]]))


def test_head_errors() -> None:
    with pytest.raises(ValueError, match="GaussianHead: token_pooling must be one of"):
        GaussianHead(4, 4, token_pooling="cls")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_dim must be > 0"):
        GaussianHead(0, 4)
    head = GaussianHead(4, 3)
    with pytest.raises(ValueError, match="features has width 5 but in_dim is 4"):
        head(torch.randn(2, 5))
    with pytest.raises(ValueError, match="key_mask is only valid with token features"):
        head(torch.randn(2, 4), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_mask has shape \(2, 2\) but features has \(2, 3\)"):
        head(torch.randn(2, 3, 4), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_mask has a row without any real token"):
        head(torch.randn(2, 3, 4), torch.tensor([[True, False, False], [False] * 3]))
    with pytest.raises(ValueError, match=r"features must be 2-D or 3-D"):
        head(torch.randn(4))
