"""Crash-safe training checkpoints.

Every file is written atomically: the bytes go to a temporary file in the destination folder,
are flushed and ``fsync``-ed, then ``os.replace`` renames it over the target, so a reader
sees either the old file or the complete new one. Temporary names never match the checkpoint
pattern, and :func:`load_latest_checkpoint` validates candidates (newest first) and skips,
with a warning, any that cannot be read.

A training checkpoint is a plain dict of tensors and primitives saved with :func:`torch.save`
and read back with ``torch.load(weights_only=True)``; it carries ``format_version``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from textreid._checks import check_format_version
from textreid._io import atomic_path, atomic_write
from textreid._untrusted import torch_load_weights_only

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "atomic_write",
    "capture_rng_state",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest_checkpoint",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
    "save_weights",
]

CHECKPOINT_FORMAT_VERSION = 1
"""Format version written into every checkpoint; newer versions are refused on load."""
_NAME = re.compile(r"^checkpoint-epoch(\d+)\.pt$")


def checkpoint_path(directory: str | os.PathLike[str], epoch: int) -> Path:
    """``directory/checkpoint-epoch{epoch:04d}.pt`` (``epoch`` = completed epochs)."""
    return Path(directory) / f"checkpoint-epoch{epoch:04d}.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Atomically save a checkpoint dict (``format_version`` is added)."""
    payload = {"format_version": CHECKPOINT_FORMAT_VERSION, **state}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: naming the file, when it is truncated, corrupt, not a textreid checkpoint
            or of a newer ``format_version``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {p}")
    obj = torch_load_weights_only(p, "load_checkpoint")
    if not isinstance(obj, dict):
        raise ValueError(
            f"load_checkpoint: {p} holds a {type(obj).__name__}, expected a checkpoint dict"
        )
    check_format_version(
        obj.get("format_version"), CHECKPOINT_FORMAT_VERSION, str(p), "load_checkpoint"
    )
    return obj


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the files named like checkpoints in ``directory``, newest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def load_latest_checkpoint(
    directory: str | os.PathLike[str],
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads, or ``None`` when there is none.

    Unreadable candidates (a file truncated by a crash, a corrupt copy) are skipped with a
    ``UserWarning`` naming them.
    """
    for _, path in list_checkpoints(directory):
        try:
            return path, load_checkpoint(path)
        except ValueError as e:
            warnings.warn(f"skipping unreadable checkpoint: {e}", UserWarning, stacklevel=2)
    return None


def prune_checkpoints(directory: str | os.PathLike[str], keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints; return the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"prune_checkpoints: keep_last must be >= 1, got {keep_last}")
    removed = []
    for _, path in list_checkpoints(directory)[keep_last:]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        removed.append(path)
    return removed


def save_weights(
    model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> Path:
    """Atomically write ``model``'s weights as safetensors (shared tensors are stored once)."""
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata=metadata)
    return Path(path)


def _generators(loader: object) -> Iterator[torch.Generator]:
    """Distinct ``torch.Generator`` objects a DataLoader draws from (loader, samplers)."""
    seen: set[int] = set()
    batch_sampler = getattr(loader, "batch_sampler", None)
    holders = [
        loader,
        getattr(loader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    ]
    for holder in holders:
        g = getattr(holder, "generator", None)
        if isinstance(g, torch.Generator) and id(g) not in seen:
            seen.add(id(g))
            yield g


def capture_rng_state(loader: object | None = None) -> dict[str, Any]:
    """RNG states as tensors and primitives: torch CPU, CUDA (when present), numpy, Python
    ``random`` and the generators of ``loader`` (DataLoader and samplers)."""
    # The legacy global numpy stream is the one data-augmentation code draws from.
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))  # noqa: NPY002
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
        "loader": [g.get_state() for g in _generators(loader)],
    }


def restore_rng_state(state: dict[str, Any], loader: object | None = None) -> None:
    """Inverse of :func:`capture_rng_state`.

    Warns when the CUDA device count or the loader's generators differ from the saved ones
    (those streams then continue from their current state).
    """
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    elif cuda:
        warnings.warn(
            "restore_rng_state: saved CUDA RNG states do not match the visible devices; "
            "CUDA random streams are not restored",
            UserWarning,
            stacklevel=2,
        )
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    gens = list(_generators(loader))
    saved = state["loader"]
    if len(gens) != len(saved):
        warnings.warn(
            f"restore_rng_state: the checkpoint holds {len(saved)} data-loader generator "
            f"state(s) but the loader has {len(gens)}; the data order will differ from an "
            "uninterrupted run",
            UserWarning,
            stacklevel=2,
        )
        return
    for g, s in zip(gens, saved):
        g.set_state(s)
