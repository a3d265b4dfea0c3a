"""Position-embedding resampling: identity, prefix, smoothness, non-square grids, IRRA mode."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from textreid.models import resample_pos_embed


def _field(h: int, w: int) -> torch.Tensor:
    """A smooth 2-channel field sampled at the cell centres of an ``h x w`` grid."""
    y = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    x = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    f = torch.stack([torch.cos(math.pi * yy) + 0.5 * xx, torch.sin(math.pi * xx) * yy], dim=-1)
    return f.reshape(h * w, 2).float()


def _manual(
    pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int], **kw: object
) -> torch.Tensor:
    grid = pos[1:].float().reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, align_corners=False, **kw)  # type: ignore[arg-type]
    return torch.cat([pos[:1].float(), grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)])


def test_identity_when_grids_match() -> None:
    pos = torch.randn(1 + 24 * 8, 16)
    out = resample_pos_embed(pos, (24, 8), (24, 8))
    assert torch.equal(out, pos)
    assert out.data_ptr() != pos.data_ptr()


@given(
    old=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    new=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    prefix=st.integers(0, 2),
    mode=st.sampled_from(["bicubic", "bilinear"]),
    antialias=st.booleans(),
)
def test_prefix_untouched_and_constant_stays_constant(
    old: tuple[int, int], new: tuple[int, int], prefix: int, mode: str, antialias: bool
) -> None:
    torch.manual_seed(0)
    head = torch.randn(prefix, 4)
    pos = torch.cat([head, torch.full((old[0] * old[1], 4), 0.75)])
    out = resample_pos_embed(
        pos, old, new, num_prefix_tokens=prefix, mode=mode, antialias=antialias
    )
    assert out.shape == (prefix + new[0] * new[1], 4)
    assert torch.equal(out[:prefix], head)
    torch.testing.assert_close(out[prefix:], torch.full_like(out[prefix:], 0.75), atol=1e-5, rtol=0)


def test_smooth_field_down_and_back() -> None:
    pos = torch.cat([torch.zeros(1, 2), _field(24, 8)])
    down = resample_pos_embed(pos, (24, 8), (16, 8))
    # Resampling is close to sampling the field on the new grid directly ...
    assert (down[1:] - _field(16, 8)).abs().max() < 0.03
    # ... and going back reproduces the original closely.
    back = resample_pos_embed(down, (16, 8), (24, 8))
    assert (back - pos).abs().max() < 0.03
    assert (back - pos).abs().mean() < 0.006


def test_non_square_grid_is_never_assumed_square() -> None:
    pos = torch.cat([torch.zeros(1, 2), _field(24, 8)])
    out = resample_pos_embed(pos, (24, 8), (12, 4), mode="bilinear", antialias=False)
    torch.testing.assert_close(out, _manual(pos, (24, 8), (12, 4), mode="bilinear"))
    # The transposed grid reads the same rows differently, so it must give another result.
    other = resample_pos_embed(pos, (8, 24), (12, 4), mode="bilinear", antialias=False)
    assert not torch.allclose(out, other)
    # A non-square grid whose row count happens to be a square (4x9 = 36 = 6x6).
    pos36 = torch.cat([torch.zeros(1, 2), _field(4, 9)])
    torch.testing.assert_close(
        resample_pos_embed(pos36, (4, 9), (8, 3), mode="bicubic", antialias=True),
        _manual(pos36, (4, 9), (8, 3), mode="bicubic", antialias=True),
    )


def test_irra_14x14_to_24x8_bilinear_matches_interpolate() -> None:
    pos = torch.randn(197, 32)
    out = resample_pos_embed(pos, (14, 14), (24, 8), mode="bilinear", antialias=False)
    torch.testing.assert_close(out, _manual(pos, (14, 14), (24, 8), mode="bilinear"))
    assert out.shape == (193, 32)


def test_half_precision_computed_in_float32() -> None:
    pos = torch.randn(1 + 6 * 6, 8).half()
    out = resample_pos_embed(pos, (6, 6), (4, 3))
    assert out.dtype == torch.float16
    expected = _manual(pos, (6, 6), (4, 3), mode="bicubic", antialias=True).half()
    assert torch.equal(out, expected)


def test_gradient_flows() -> None:
    pos = torch.randn(1 + 4 * 2, 3, dtype=torch.float64, requires_grad=True)
    resample_pos_embed(pos, (4, 2), (3, 3)).sum().backward()
    assert pos.grad is not None
    assert bool(pos.grad.abs().sum() > 0)


def test_errors() -> None:
    pos = torch.randn(1 + 24 * 8, 4)
    with pytest.raises(ValueError, match=r"pos has 193 rows but old_grid \(14, 14\)"):
        resample_pos_embed(pos, (14, 14), (24, 8))
    with pytest.raises(ValueError, match="mode must be one of"):
        resample_pos_embed(pos, (24, 8), (12, 4), mode="nearest")
    with pytest.raises(ValueError, match="new_grid must be a"):
        resample_pos_embed(pos, (24, 8), (0, 4))
    with pytest.raises(ValueError, match="pos must be 2-D"):
        resample_pos_embed(pos[None], (24, 8), (12, 4))
    with pytest.raises(ValueError, match="num_prefix_tokens must be >= 0"):
        resample_pos_embed(pos, (24, 8), (12, 4), num_prefix_tokens=-1)
