"""Bad input to the token-similarity head and its public helpers raises our own message."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from textreid.heads.token_similarity import (
    SparseTokenSimilarity,
    maxsim_logsumexp,
    sparse_aggregate,
)


def _tokens(*shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


@pytest.mark.parametrize(
    ("image_shape", "text_shape", "message"),
    [
        ((2, 0, 4), (3, 5, 4), "image_tokens (B_i, P, D) has 0 tokens, shape (2, 0, 4)"),
        ((2, 6, 4), (3, 0, 4), "text_tokens (B_t, L, D) has 0 tokens, shape (3, 0, 4)"),
    ],
)
def test_head_zero_tokens(
    image_shape: tuple[int, ...], text_shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(f"SparseTokenSimilarity: {message}")):
        SparseTokenSimilarity()(torch.randn(image_shape), torch.randn(text_shape))


def test_head_devices_checked_before_values() -> None:
    with pytest.raises(
        ValueError,
        match="SparseTokenSimilarity: image_tokens is on cpu but text_tokens is on meta",
    ):
        SparseTokenSimilarity()(_tokens(2, 6, 4), torch.randn(3, 5, 4, device="meta"))


Helper = Callable[..., Tensor]
HELPERS: dict[str, tuple[Helper, str, str, str]] = {
    # name: (function, first tokens, second tokens, mask of the second side)
    "sparse_aggregate": (sparse_aggregate, "text_tokens", "image_tokens", "image_mask"),
    "maxsim_logsumexp": (maxsim_logsumexp, "x_tokens", "c_tokens", "c_mask"),
}
NAMES = list(HELPERS)


def test_helpers_match_the_head() -> None:
    # The validated helpers compute what the head (on their unchecked cores) computes.
    t, p = _tokens(5, 4).double(), _tokens(6, 4).double()
    head = SparseTokenSimilarity(chunk_size=None)(p[None], t[None])[0, 0]
    agg = sparse_aggregate(t, p)
    torch.testing.assert_close(maxsim_logsumexp(t, agg), head)


@pytest.mark.parametrize("name", NAMES)
def test_helpers_width_and_rank(name: str) -> None:
    fn, a, b, _ = HELPERS[name]
    with pytest.raises(ValueError, match=f"{name}: {a} has width 4 but {b} has width 3"):
        fn(_tokens(5, 4), _tokens(6, 3))
    with pytest.raises(
        ValueError, match=rf"{name}: {b} must be at least 2-D \(\.\.\., N, D\), got shape \(6\)"
    ):
        fn(_tokens(5, 4), _tokens(6))
    with pytest.raises(TypeError, match=f"{name}: {a} must be a torch.Tensor, got list"):
        fn([[0.0] * 4], _tokens(6, 4))
    with pytest.raises(
        TypeError, match=f"{name}: {b} has dtype torch.int64; expected a floating dtype"
    ):
        fn(_tokens(5, 4), torch.ones(6, 4, dtype=torch.long))


@pytest.mark.parametrize("name", NAMES)
def test_helpers_zero_tokens_and_width(name: str) -> None:
    fn, a, b, _ = HELPERS[name]
    with pytest.raises(
        ValueError, match=re.escape(f"{name}: {b} (..., N, D) has 0 tokens, shape (2, 0, 4)")
    ):
        fn(_tokens(2, 5, 4), torch.randn(2, 0, 4))
    with pytest.raises(
        ValueError, match=re.escape(f"{name}: {a} has a zero-sized feature dimension, shape (5, 0)")
    ):
        fn(torch.randn(5, 0), torch.randn(6, 0))


@pytest.mark.parametrize("name", NAMES)
def test_helpers_devices(name: str) -> None:
    fn, a, b, mask = HELPERS[name]
    with pytest.raises(ValueError, match=f"{name}: {a} is on cpu but {b} is on meta"):
        fn(_tokens(5, 4), torch.randn(6, 4, device="meta"))
    with pytest.raises(ValueError, match=f"{name}: {b} is on cpu but {mask} is on meta"):
        fn(_tokens(5, 4), _tokens(6, 4), **{mask: torch.ones(6, dtype=torch.bool, device="meta")})


@pytest.mark.parametrize("name", NAMES)
def test_helpers_masks(name: str) -> None:
    fn, _, b, mask = HELPERS[name]
    t, p = _tokens(2, 5, 4), _tokens(2, 6, 4)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{name}: {mask} has shape (2, 5) but {b} has 6 tokens (shape (2, 6, 4)); "
            "its last dimension must be 6"
        ),
    ):
        fn(t, p, **{mask: torch.ones(2, 5, dtype=torch.bool)})
    with pytest.raises(TypeError, match=f"{name}: {mask} must be a bool tensor, got torch.int64"):
        fn(t, p, **{mask: torch.ones(2, 6, dtype=torch.long)})
    empty_row = torch.ones(2, 6, dtype=torch.bool)
    empty_row[1] = False
    with pytest.raises(
        ValueError, match=f"{name}: every row of {mask} needs at least one True \\(real\\) token"
    ):
        fn(t, p, **{mask: empty_row})
    with pytest.raises(
        ValueError,
        match=re.escape(f"{name}: the leading dimensions do not broadcast: ") + r".*\(2,\).*\(3,\)",
    ):
        fn(t, p, **{mask: torch.ones(3, 6, dtype=torch.bool)})


@pytest.mark.parametrize("name", NAMES)
def test_helpers_leading_dimensions(name: str) -> None:
    fn, a, b, _ = HELPERS[name]
    with pytest.raises(
        ValueError,
        match=re.escape(f"{name}: the leading dimensions do not broadcast: {a} (2,), {b} (3,)"),
    ):
        fn(_tokens(2, 5, 4), _tokens(3, 6, 4))


@pytest.mark.parametrize("name", NAMES)
def test_helpers_non_finite_on_cpu(name: str) -> None:
    fn, a, _, _ = HELPERS[name]
    bad = _tokens(5, 4)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"{name}: {a} contains 1 non-finite values"):
        fn(bad, _tokens(6, 4))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: sparse_aggregate(_tokens(5, 4), _tokens(6, 4), threshold=-0.1),
            ValueError,
            "sparse_aggregate: threshold must be >= 0, got -0.1",
        ),
        (
            lambda: sparse_aggregate(_tokens(5, 4), _tokens(6, 4), threshold="0.1"),
            TypeError,
            "sparse_aggregate: threshold must be a real number, got str",
        ),
        (
            lambda: maxsim_logsumexp(_tokens(5, 4), _tokens(6, 4), temperature=0.0),
            ValueError,
            "maxsim_logsumexp: temperature must be > 0, got 0.0",
        ),
        (
            lambda: maxsim_logsumexp(_tokens(5, 4), _tokens(6, 4), temperature="1"),
            TypeError,
            "maxsim_logsumexp: temperature must be a float, got str",
        ),
    ],
)
def test_helpers_settings(call: Callable[[], object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_maxsim_checks_both_masks() -> None:
    with pytest.raises(
        ValueError, match=re.escape("maxsim_logsumexp: x_mask has shape (4,) but x_tokens has 5")
    ):
        maxsim_logsumexp(_tokens(5, 4), _tokens(6, 4), x_mask=torch.ones(4, dtype=torch.bool))
