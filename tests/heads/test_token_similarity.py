"""Tests of the sparsified token similarity head and its functional pieces."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from textreid.heads.token_similarity import (
    SparseTokenSimilarity,
    maxsim_logsumexp,
    sparse_aggregate,
)


def _loop_reference(img: torch.Tensor, txt: torch.Tensor, tau: float) -> torch.Tensor:
    """Slow per-pair reference written straight from the formulas (no masks)."""
    out = torch.empty(img.shape[0], txt.shape[0], dtype=img.dtype)
    for i in range(img.shape[0]):
        for j in range(txt.shape[0]):
            p, t = img[i], txt[j]
            rows = []
            for tok in range(t.shape[0]):
                s = p @ t[tok]
                s_hat = (s - s.min()) / (s.max() - s.min())
                s_hat = torch.where(s_hat > 1.0 / p.shape[0], s_hat, torch.zeros_like(s_hat))
                rows.append((s_hat / s_hat.sum()) @ p)
            a = torch.stack(rows)
            cos = (
                torch.nn.functional.normalize(t, dim=1) @ torch.nn.functional.normalize(a, dim=1).T
            )
            out[i, j] = torch.logsumexp(cos.max(dim=1).values / tau, dim=0)
    return out


def test_shape_and_loop_reference() -> None:
    img, txt = torch.randn(3, 7, 8, dtype=torch.float64), torch.randn(4, 5, 8, dtype=torch.float64)
    head = SparseTokenSimilarity(temperature=0.5, chunk_size=2)
    out = head(img, txt)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out, _loop_reference(img, txt, 0.5))


def test_hand_computed_aggregation() -> None:
    # Row of dot products [0, 1, 2] -> normalised [0, .5, 1]; 0 is not > 1/3; weights [0, 1/3, 2/3].
    p = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    t = torch.tensor([[1.0, 0.0]])
    agg = sparse_aggregate(t, p)
    torch.testing.assert_close(agg, torch.tensor([[1 / 3 + 4 / 3, 0.0]]))


def test_maxsim_logsumexp_hand_value() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0]])
    # best cosines [1, 0] -> log(e^1 + e^0)
    torch.testing.assert_close(maxsim_logsumexp(x, c), torch.log(torch.tensor(torch.e + 1.0)))


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunked_equals_unchunked_values_and_grads(chunk: int) -> None:
    img = torch.randn(5, 6, 4, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    im = torch.rand(5, 6) > 0.3
    im[:, 0] = True
    tm = torch.rand(3, 5) > 0.3
    tm[:, 0] = True
    w = torch.randn(5, 3, dtype=torch.float64)
    ref = SparseTokenSimilarity(chunk_size=None)(img, txt, im, tm)
    g_ref = torch.autograd.grad((ref * w).sum(), (img, txt))
    out = SparseTokenSimilarity(chunk_size=chunk)(img, txt, im, tm)
    g = torch.autograd.grad((out * w).sum(), (img, txt))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_padding_with_garbage_never_changes_the_score() -> None:
    img, txt = torch.randn(2, 6, 8), torch.randn(3, 5, 8)
    base = SparseTokenSimilarity()(
        img, txt, torch.ones(2, 6, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool)
    )
    img_p = torch.cat([img, 1e3 * torch.randn(2, 4, 8)], dim=1)
    txt_p = torch.cat([txt, 1e3 * torch.randn(3, 2, 8)], dim=1)
    im = torch.cat([torch.ones(2, 6), torch.zeros(2, 4)], dim=1).bool()
    tm = torch.cat([torch.ones(3, 5), torch.zeros(3, 2)], dim=1).bool()
    img_p.requires_grad_()
    out = SparseTokenSimilarity(chunk_size=2)(img_p, txt_p, im, tm)
    torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-5)
    (g,) = torch.autograd.grad(out.sum(), img_p)
    assert torch.all(g[:, 6:] == 0)
    assert torch.isfinite(g).all()


def test_include_padding_scores_every_position() -> None:
    img, txt = torch.randn(2, 6, 8), torch.randn(3, 5, 8)
    full = SparseTokenSimilarity(include_padding=True)(img, txt)
    torch.testing.assert_close(full, SparseTokenSimilarity()(img, txt))
    tm = torch.ones(3, 5, dtype=torch.bool)
    tm[:, 3:] = False
    assert not torch.allclose(SparseTokenSimilarity()(img, txt, text_mask=tm), full)


def test_constant_row_and_single_token_are_finite() -> None:
    img = torch.ones(2, 1, 4, requires_grad=True)
    txt = torch.randn(2, 3, 4)
    out = SparseTokenSimilarity()(img, txt)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert img.grad is not None
    assert torch.isfinite(img.grad).all()


@given(st.floats(0.5, 3.0))
def test_aggregation_invariant_to_positive_scaling_of_text(scale: float) -> None:
    g = torch.Generator().manual_seed(0)
    p, t = (
        torch.randn(6, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 4, generator=g, dtype=torch.float64),
    )
    # Scaling a text token scales its row of dot products: the weights do not change.
    torch.testing.assert_close(sparse_aggregate(t * scale, p), sparse_aggregate(t, p))


def test_deterministic() -> None:
    img, txt = torch.randn(3, 6, 8), torch.randn(3, 5, 8)
    head = SparseTokenSimilarity(chunk_size=2)
    assert torch.equal(head(img, txt), head(img, txt))


def test_gradcheck() -> None:
    img = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    head = SparseTokenSimilarity(chunk_size=1)
    assert torch.autograd.gradcheck(lambda a, b: head(a, b), (img, txt))


def test_errors() -> None:
    head = SparseTokenSimilarity()
    img, txt = torch.randn(2, 6, 8), torch.randn(3, 5, 8)
    with pytest.raises(ValueError, match="image_mask has shape"):
        head(img, txt, image_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one True"):
        head(img, txt, text_mask=torch.zeros(3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="must be a bool tensor"):
        head(img, txt, text_mask=torch.ones(3, 5))
    with pytest.raises(ValueError, match="has width 8 but text_tokens has width 4"):
        head(img, torch.randn(3, 5, 4))
    with pytest.raises(ValueError, match="include_padding=True"):
        SparseTokenSimilarity(include_padding=True)(
            img, txt, text_mask=torch.ones(3, 5, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SparseTokenSimilarity(temperature=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        head(img, txt.masked_fill(torch.rand(3, 5, 8) > 0.9, float("nan")))
