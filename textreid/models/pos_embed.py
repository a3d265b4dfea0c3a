"""Resampling of ViT position embeddings to another patch grid.

Checkpoints are often trained at one resolution (CLIP: 224x224, a 14x14 grid at patch 16)
and fine-tuned at another (person images: 384x128, a 24x8 grid). The old grid is always
passed explicitly: it cannot be recovered from the number of rows when it is not square.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from textreid._checks import check_choice, check_tensor

__all__ = ["resample_pos_embed"]

_MODES = ("bicubic", "bilinear")


def _grid(value: Sequence[int], name: str, fn: str) -> tuple[int, int]:
    if len(value) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in value):
        raise ValueError(f"{fn}: {name} must be a (rows, cols) pair of positive ints, got {value}")
    return (int(value[0]), int(value[1]))


def resample_pos_embed(
    pos: Tensor,
    old_grid: Sequence[int],
    new_grid: Sequence[int],
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
    antialias: bool = True,
) -> Tensor:
    """Resample a ``[N, W]`` position embedding from ``old_grid`` to ``new_grid``.

    The first ``num_prefix_tokens`` rows (the class token) are copied unchanged; the other
    ``h * w`` rows are read as a row-major ``h x w`` grid of W-dim vectors, interpolated to
    ``h' x w'`` with :func:`torch.nn.functional.interpolate` (``align_corners=False``) in
    float32, and cast back to the input dtype.

    Args:
        pos: ``[N, W]`` embedding with ``N = num_prefix_tokens + h * w``.
        old_grid: ``(h, w)`` of the checkpoint; never assumed square.
        new_grid: ``(h', w')`` wanted.
        num_prefix_tokens: Rows before the grid that are kept as they are.
        mode: ``"bicubic"`` (library default) or ``"bilinear"`` (IRRA).
        antialias: Antialias when downsampling (IRRA: ``False``).

    Returns:
        ``[num_prefix_tokens + h' * w', W]`` with the dtype and device of ``pos``; a copy of
        ``pos`` when the grids are equal.

    Raises:
        ValueError: If ``pos`` is not 2-D, its row count does not match ``old_grid``, a grid
            is not a pair of positive ints, or ``mode`` is unknown.
    """
    fn = "resample_pos_embed"
    check_tensor(pos, "pos", fn, ndim=2, kind="float", dims="(N, W)")
    old = _grid(old_grid, "old_grid", fn)
    new = _grid(new_grid, "new_grid", fn)
    check_choice(mode, "mode", fn, _MODES)
    if num_prefix_tokens < 0:
        raise ValueError(f"{fn}: num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
    n, width = pos.shape
    if n != num_prefix_tokens + old[0] * old[1]:
        raise ValueError(
            f"{fn}: pos has {n} rows but old_grid {old} with {num_prefix_tokens} prefix "
            f"token(s) needs {num_prefix_tokens + old[0] * old[1]}"
        )
    if old == new:
        return pos.clone()
    prefix, grid = pos[:num_prefix_tokens], pos[num_prefix_tokens:]
    grid = grid.float().reshape(1, old[0], old[1], width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode=mode, align_corners=False, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], width).to(pos.dtype)
    return torch.cat([prefix, grid], dim=0)
