"""Atomic checkpoint files, rejection of truncated/corrupt ones, RNG state round trip."""

# The legacy global numpy stream is deliberate: it is what checkpoints must restore.
# ruff: noqa: NPY002

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import textreid.training.checkpoint as ckpt_mod
from textreid.training.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)


def _state(v: float) -> dict[str, object]:
    return {"model": {"w": torch.full((64,), v)}, "epoch": int(v)}


def test_round_trip_and_format_version(tmp_path: Path) -> None:
    path = save_checkpoint(_state(1.0), checkpoint_path(tmp_path, 1))
    assert path.name == "checkpoint-epoch0001.pt"
    loaded = load_checkpoint(path)
    assert loaded["format_version"] == ckpt_mod.CHECKPOINT_FORMAT_VERSION
    assert torch.equal(loaded["model"]["w"], torch.full((64,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_failed_write_leaves_previous_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(_state(1.0), checkpoint_path(tmp_path, 1))
    before = path.read_bytes()

    def crash(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04 partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2.0), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_truncated_checkpoint_is_rejected_with_its_name(tmp_path: Path) -> None:
    good = save_checkpoint(_state(1.0), checkpoint_path(tmp_path, 1))
    bad = checkpoint_path(tmp_path, 2)
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError,
        match=r"load_checkpoint: cannot read .*checkpoint-epoch0002\.pt as a torch checkpoint",
    ):
        load_checkpoint(bad)
    with pytest.warns(UserWarning, match=r"skipping unreadable checkpoint.*checkpoint-epoch0002"):
        found = load_latest_checkpoint(tmp_path)
    assert found is not None
    assert found[0] == good
    assert found[1]["epoch"] == 1


def test_latest_is_none_when_nothing_loads(tmp_path: Path) -> None:
    assert load_latest_checkpoint(tmp_path / "missing") is None
    checkpoint_path(tmp_path, 3).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="checkpoint-epoch0003"):
        assert load_latest_checkpoint(tmp_path) is None


def test_temp_files_and_other_names_are_not_candidates(tmp_path: Path) -> None:
    save_checkpoint(_state(1.0), checkpoint_path(tmp_path, 1))
    (tmp_path / ".checkpoint-epoch0009.pt.abc.tmp").write_bytes(b"x")
    (tmp_path / "checkpoint-epoch0009.pt.bak").write_bytes(b"x")
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1]


def test_format_and_type_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.pt"
    torch.save({"format_version": 99}, p)
    with pytest.raises(
        ValueError, match="format_version 99, but this textreid reads versions up to 1"
    ):
        load_checkpoint(p)
    torch.save({"model": {}}, p)
    with pytest.raises(ValueError, match="has no integer format_version"):
        load_checkpoint(p)
    torch.save([1, 2], p)
    with pytest.raises(ValueError, match=r"c\.pt holds a list, expected a checkpoint dict"):
        load_checkpoint(p)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")


def test_prune_keeps_newest(tmp_path: Path) -> None:
    for e in (1, 2, 3, 10):
        save_checkpoint(_state(float(e)), checkpoint_path(tmp_path, e))
    removed = prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in removed) == ["checkpoint-epoch0001.pt", "checkpoint-epoch0002.pt"]
    assert [e for e, _ in list_checkpoints(tmp_path)] == [10, 3]
    with pytest.raises(ValueError, match="prune_checkpoints: keep_last must be >= 1"):
        prune_checkpoints(tmp_path, 0)


def test_rng_state_round_trip_through_weights_only_file(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    loader = torch.utils.data.DataLoader(list(range(10)), shuffle=True, generator=gen)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in the state
    state = capture_rng_state(loader)
    path = save_checkpoint({"rng": state}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    restore_rng_state(load_checkpoint(path)["rng"], loader)
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]
    assert torch.equal(got[3], expected[3])


def test_restore_warns_on_loader_mismatch() -> None:
    state = capture_rng_state(None)
    loader = torch.utils.data.DataLoader([1], shuffle=True, generator=torch.Generator())
    with pytest.warns(UserWarning, match="holds 0 data-loader generator state"):
        restore_rng_state(state, loader)
