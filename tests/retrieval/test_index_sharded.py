"""Sharded gallery indexes: shard files + a manifest written last, per-rank loading, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from textreid.retrieval import GalleryIndex, GaussianScorer
from textreid.retrieval.index import SHARDED_MANIFEST, ShardedIndexWriter


def _index(n: int = 10) -> GalleryIndex:
    g = torch.Generator().manual_seed(0)
    feats = {"mean": torch.randn(n, 6, generator=g), "log_var": torch.randn(n, 6, generator=g)}
    return GalleryIndex(
        feats,
        ids=torch.arange(100, 100 + n),
        paths=[f"img/{i:03d}é.jpg" for i in range(n)],
        scorer=GaussianScorer(),
        model_fingerprint="abc123",
    )


def _same(a: GalleryIndex, b: GalleryIndex, rows: slice) -> None:
    assert set(a.feature_map) == set(b.feature_map)
    for key, t in a.feature_map.items():
        assert torch.equal(t, b.feature_map[key][rows])
    assert a.ids is not None
    assert b.ids is not None
    assert torch.equal(a.ids, b.ids[rows])
    assert a.paths == (b.paths or [])[rows]
    assert a.scorer == b.scorer
    assert a.model_fingerprint == b.model_fingerprint


def test_round_trip_and_ranks(tmp_path: Path) -> None:
    index = _index()
    out = index.save_sharded(tmp_path / "idx", shard_size=4)
    names = sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors")
    assert names == [f"shard-0000{i}-of-00003.safetensors" for i in range(3)]
    _same(GalleryIndex.load(out), index, slice(None))
    # 3 shards over 2 ranks: [shard 0], [shards 1, 2].
    first, off0 = GalleryIndex.load_shard(out, 0, 2)
    second, off1 = GalleryIndex.load_shard(out, 1, 2)
    assert (off0, off1) == (0, 4)
    _same(first, index, slice(0, 4))
    _same(second, index, slice(4, 10))
    if Path("/proc/self/maps").exists():  # one shard per rank stays memory-mapped
        ptr = first.feature_map["mean"].data_ptr()
        maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
        owner = [
            m[-1] for m in maps if int(m[0].split("-")[0], 16) <= ptr < int(m[0].split("-")[1], 16)
        ]
        assert owner == [str(out / "shard-00000-of-00003.safetensors")]
    # More ranks than shards: a rank without one gets no rows, with the right widths.
    empty, off = GalleryIndex.load_shard(out, 0, 4)
    assert len(empty) == 0
    assert off == 0
    assert empty.feature_map["mean"].shape == (0, 6)
    ranks = [GalleryIndex.load_shard(out, r, 4) for r in range(4)]
    assert [o for _, o in ranks] == [0, 0, 4, 8]
    assert sum(len(i) for i, _ in ranks) == 10


def test_resume_skips_written_shards(tmp_path: Path) -> None:
    index = _index()
    f = index.feature_map
    kw = {"rows": 10, "shard_size": 4, "key": "k1", "scorer": GaussianScorer(),
          "model_fingerprint": "abc123"}  # fmt: skip
    w = ShardedIndexWriter(tmp_path, **kw)  # type: ignore[arg-type]
    assert w.pending() == [0, 1, 2]
    done = w.write_shard(0, {k: t[:4] for k, t in f.items()}, index.ids[:4], index.paths[:4])  # type: ignore[index]
    stamp = os.stat(done).st_mtime_ns
    # A crash while writing shard 1 leaves only a temporary folder beside it.
    (tmp_path / ".shard-00001-of-00003.safetensors.abcdefgh.tmp").mkdir()
    w = ShardedIndexWriter(tmp_path, **kw)  # type: ignore[arg-type]
    assert w.pending() == [1, 2]
    with pytest.raises(ValueError, match=r"finish: shard\(s\) \[1, 2\] of 3 are not written"):
        w.finish()
    for i in w.pending():
        a, b = w.bounds(i)
        w.write_shard(i, {k: t[a:b] for k, t in f.items()}, index.ids[a:b], index.paths[a:b])  # type: ignore[index]
    w.finish()
    assert os.stat(done).st_mtime_ns == stamp  # not rewritten
    _same(GalleryIndex.load(tmp_path), index, slice(None))
    # Another plan refuses to resume; resume=False starts over.
    with pytest.raises(ValueError, match="another plan \\(differing: key\\)"):
        ShardedIndexWriter(tmp_path, **{**kw, "key": "k2"})  # type: ignore[arg-type]
    w = ShardedIndexWriter(tmp_path, **{**kw, "key": "k2"}, resume=False)  # type: ignore[arg-type]
    assert w.pending() == [0, 1, 2]
    assert not (tmp_path / SHARDED_MANIFEST).exists()


def test_bad_writes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ShardedIndexWriter: shard_size must be"):
        ShardedIndexWriter(tmp_path, rows=3, shard_size=0, key="k")
    with pytest.raises(ValueError, match="make 100000 shards, more than 99999"):
        ShardedIndexWriter(tmp_path, rows=100_000, shard_size=1, key="k")
    w = ShardedIndexWriter(tmp_path, rows=5, shard_size=4, key="k")
    with pytest.raises(ValueError, match="shard 1 holds rows 4 to 5, 1 rows, but features has 2"):
        w.write_shard(1, torch.randn(2, 3))
    with pytest.raises(ValueError, match="number must be below 2 shards"):
        w.write_shard(2, torch.randn(1, 3))


def test_corrupt_folders_are_refused(tmp_path: Path) -> None:
    out = _index().save_sharded(tmp_path / "idx", shard_size=4)
    manifest = json.loads((out / SHARDED_MANIFEST).read_text())

    def write(m: object) -> None:
        (out / SHARDED_MANIFEST).write_text(json.dumps(m))

    write({**manifest, "shards": [{**manifest["shards"][0], "bytes": 7}, *manifest["shards"][1:]]})
    with pytest.raises(ValueError, match="lists 7 bytes but the file has"):
        GalleryIndex.load(out)
    write({**manifest, "shards": [{**manifest["shards"][0], "file": "../x"}]})
    with pytest.raises(ValueError, match=r"expected file 'shard-00000-of-00001\.safetensors'"):
        GalleryIndex.load(out)
    write({**manifest, "shards": [{"file": f"shard-{i:05d}-of-100000.safetensors", "rows": 1,
                                    "bytes": 1} for i in range(100_000)]})  # fmt: skip
    with pytest.raises(ValueError, match="list of 1 to 99999 entries"):
        GalleryIndex.load(out)
    write({**manifest, "format_version": 2})
    with pytest.raises(ValueError, match="format_version"):
        GalleryIndex.load(out)
    write(manifest)
    (out / "shard-00002-of-00003.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard-00002-of-00003\.safetensors is missing"):
        GalleryIndex.load(out)
    with pytest.raises(ValueError, match="load_shard: rank must be below world_size=2"):
        GalleryIndex.load_shard(out, 2, 2)
