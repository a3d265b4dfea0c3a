"""GalleryIndex: add/search/ids/paths, save/load round trip, mmap, atomic saves, hardened reads."""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import textreid.retrieval.index as index_module
from textreid.retrieval import GalleryIndex, SearchResult, topk_search

FILE = "gallery_index.safetensors"
V1 = Path(__file__).parents[1] / "fixtures" / "compat" / "v1" / "gallery"
PATHS = [f"img{i}.jpg" for i in range(7)] + ["", "caméra/façade ünïcode.png"]


def _index(dtype: torch.dtype = torch.float32) -> GalleryIndex:
    gen = torch.Generator().manual_seed(0)
    index = GalleryIndex()
    index.add(torch.randn(5, 8, generator=gen).to(dtype), torch.arange(5), PATHS[:5])
    index.add(torch.randn(4, 8, generator=gen).to(dtype), torch.arange(5, 9), PATHS[5:])
    return index


def _split(path: Path) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the data section of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header: dict[str, Any] = json.loads(raw[8 : 8 + n])
    return header, raw[8 + n :]


def _join(path: Path, header: object, data: bytes) -> None:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def _v1_folder(tmp_path: Path) -> Path:
    """A copy of the gallery written by textreid 0.1 (9 paths would not fit: it has 5 rows)."""
    folder = tmp_path / "v1"
    shutil.copytree(V1, folder)
    return folder


def _saved(tmp_path: Path, fmt: str) -> tuple[Path, Path]:
    """``(folder, safetensors file)`` of a saved index in format ``v1`` or ``v2``."""
    if fmt == "v1":
        folder = _v1_folder(tmp_path)
        return folder, folder / "gallery.safetensors"
    folder = tmp_path / "v2"
    _index().save(folder)
    return folder, folder / FILE


def test_add_search_and_names_of_hits() -> None:
    index = _index()
    assert len(index) == 9
    assert "9 items" in repr(index)
    q = torch.randn(3, 8)
    hits = index.search(q, 4, normalize=True)
    ref = topk_search(q, index.features, 4, normalize=True)
    assert torch.equal(hits.indices, ref.indices)
    assert torch.equal(index.ids_of(hits), hits.indices)  # ids are 0..8 here
    assert index.paths_of(hits)[0] == [PATHS[j] for j in hits.indices[0].tolist()]


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_save_load_round_trip(tmp_path: Path, mmap: bool, dtype: torch.dtype) -> None:
    index = _index(dtype)
    assert index.save(tmp_path / "gal") == tmp_path / "gal"
    assert os.listdir(tmp_path / "gal") == [FILE]  # one file, no temporaries left
    back = GalleryIndex.load(tmp_path / "gal", mmap=mmap)
    assert torch.equal(back.features, index.features)
    assert back.features.dtype == dtype
    assert back.ids is not None
    assert back.ids.dtype == torch.int64
    assert torch.equal(back.ids, torch.arange(9))
    assert back.paths == PATHS
    assert GalleryIndex.load(tmp_path / "gal" / FILE, mmap=mmap).paths == PATHS  # the file too
    q = torch.randn(2, 8)
    assert torch.equal(back.search(q, 3).indices, index.search(q, 3).indices)
    back.add(torch.zeros(1, 8, dtype=dtype), torch.tensor([9]), ["new.jpg"])  # file untouched
    again = GalleryIndex.load(tmp_path / "gal", mmap=mmap)
    assert len(again) == 9


def test_round_trip_without_ids_or_paths(tmp_path: Path) -> None:
    feats = torch.randn(3, 4, dtype=torch.float64)
    GalleryIndex(feats).save(tmp_path)
    back = GalleryIndex.load(tmp_path)
    assert torch.equal(back.features, feats)
    assert back.ids is None
    assert back.paths is None


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux /proc/self/maps")
def test_mmap_load_maps_the_file(tmp_path: Path) -> None:
    GalleryIndex(torch.randn(64, 4), paths=[str(i) for i in range(64)]).save(tmp_path)

    def mapped_file(ptr: int) -> str | None:
        for line in Path("/proc/self/maps").read_text().splitlines():
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return parts[-1] if len(parts) > 5 else None
        return None

    mapped = GalleryIndex.load(tmp_path, mmap=True)
    read = GalleryIndex.load(tmp_path, mmap=False)
    assert mapped.ids is None
    assert mapped.paths == read.paths == [str(i) for i in range(64)]
    assert mapped_file(mapped.features.data_ptr()) == str(tmp_path / FILE)
    assert mapped_file(read.features.data_ptr()) != str(tmp_path / FILE)


def test_an_interrupted_save_leaves_the_previous_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill after the tensors are written must not pair new features with old paths."""
    import safetensors.torch

    old = _index()
    old.save(tmp_path)
    new = GalleryIndex(-old.features, old.ids, [f"new{i}.jpg" for i in range(9)])
    real_save_file = safetensors.torch.save_file

    def save_then_die(*args: Any, **kwargs: Any) -> None:
        real_save_file(*args, **kwargs)
        raise KeyboardInterrupt  # the process is stopped right after writing the tensors

    monkeypatch.setattr(safetensors.torch, "save_file", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path)
    back = GalleryIndex.load(tmp_path)
    assert torch.equal(back.features, old.features)
    assert back.paths == old.paths
    assert os.listdir(tmp_path) == [FILE]  # the temporary file is gone


def test_saving_over_a_v1_folder_replaces_it(tmp_path: Path) -> None:
    folder = _v1_folder(tmp_path)
    old = GalleryIndex.load(folder)
    assert old.paths == [f"img{i}.png" for i in range(5)]
    GalleryIndex(old.features.clone(), old.ids, ["moved.png"] * 5).save(folder)
    assert sorted(os.listdir(folder)) == [FILE]
    back = GalleryIndex.load(folder)
    assert back.paths == ["moved.png"] * 5
    assert back.ids is not None
    assert old.ids is not None
    assert torch.equal(back.ids, old.ids)


def test_a_path_that_is_not_utf8_is_refused_before_writing(tmp_path: Path) -> None:
    index = GalleryIndex(torch.randn(2, 3), paths=["ok.png", "bad\udcff.png"])
    with pytest.raises(ValueError, match=r"GalleryIndex.save: paths\[1\] .* cannot be written"):
        index.save(tmp_path)
    assert os.listdir(tmp_path) == []


def _set_version(path: Path, version: str) -> None:
    header, data = _split(path)
    header["__metadata__"]["format_version"] = version
    _join(path, header, data)


def test_future_format_version_is_refused(tmp_path: Path) -> None:
    _index().save(tmp_path)
    _set_version(tmp_path / FILE, "99")
    with pytest.raises(
        ValueError, match="format_version 99, but this textreid reads versions up to 3"
    ):
        GalleryIndex.load(tmp_path)
    _set_version(tmp_path / FILE, "two")
    with pytest.raises(ValueError, match="has no integer format_version"):
        GalleryIndex.load(tmp_path)
    _set_version(tmp_path / FILE, "1")
    with pytest.raises(ValueError, match="format_version 1 was never written as a single file"):
        GalleryIndex.load(tmp_path)


def test_missing_files_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        GalleryIndex.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        GalleryIndex.load(tmp_path)  # an empty folder


def _entry(header: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    header[name].update(changes)
    return header


def _offsets(header: dict[str, Any], name: str) -> list[int]:
    offsets: list[int] = header[name]["data_offsets"]
    return offsets


def _size(header: dict[str, Any], name: str) -> int:
    begin, end = _offsets(header, name)
    return end - begin


# (id, header -> new header or raw bytes, message). Each applies to both formats' tensor files.
HEADER_CASES: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    ("list", lambda h: [h], "the header of .* must hold a JSON object, got list"),
    (
        "entry-list",
        lambda h: {**h, "features": [1, 2]},
        "tensor 'features' is described by a list, not an object",
    ),
    (
        "negative-offsets",
        lambda h: _entry(h, "features", data_offsets=[-8, _size(h, "features") - 8]),
        r"tensor 'features' has data_offsets \[-8, \d+\], outside the \d+-byte data section",
    ),
    (
        "float-offsets",
        lambda h: _entry(h, "features", data_offsets=[float(o) for o in _offsets(h, "features")]),
        r"data_offsets \[.*\]; expected \[begin, end\] integers",
    ),
    (
        "offsets-past-end",
        lambda h: _entry(h, "features", data_offsets=[o + 10**6 for o in _offsets(h, "features")]),
        "outside the",
    ),
    (
        "shape-mismatch",
        lambda h: _entry(h, "features", shape=[h["features"]["shape"][0], 3]),
        r"needs \d+ bytes, but its data_offsets span \d+",
    ),
    (
        "overlap",
        lambda h: _entry(
            h,
            "ids",
            data_offsets=[
                _offsets(h, "features")[0],
                _offsets(h, "features")[0] + 8 * h["ids"]["shape"][0],
            ],
        ),
        r"tensor '\w+' starts at data byte \d+, but the tensors before it end at \d+",
    ),
    ("bad-dtype", lambda h: _entry(h, "features", dtype="F8"), "has dtype 'F8'; expected one of"),
    ("float-ids", lambda h: _entry(h, "ids", dtype="F64"), "tensor 'ids' has dtype F64"),
    ("int-features", lambda h: _entry(h, "features", dtype="I32"), "tensor 'features' has dtype"),
    (
        "1d-features",
        lambda h: _entry(
            h, "features", shape=[h["features"]["shape"][0] * h["features"]["shape"][1]]
        ),
        r"tensor 'features' has shape \(\d+,\); expected \(any, any\)",
    ),
    (
        "negative-dim",
        lambda h: _entry(h, "ids", shape=[-1]),
        "has shape .*; expected a list of at most 8 non-negative integers",
    ),
    (
        "unknown-tensor",
        lambda h: {**h, "x": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}},
        r"unexpected tensors \['x'\]",
    ),
    (
        "nan",
        lambda h: _entry(h, "features", shape=[float("nan"), 8]),
        r"has shape \[nan, 8\]; expected a list of at most 8 non-negative integers",
    ),
    ("metadata", lambda h: {**h, "__metadata__": {"a": 1}}, "__metadata__ is not an object of"),
    (
        "invalid-utf8",
        lambda h: json.dumps(h).encode().replace(b'"features"', b'"\xfe\xff"'),
        "the header of .* is not valid JSON .*utf-8",
    ),
    ("deep", lambda h: b"[" * 200_000 + b"]" * 200_000, "the header of .* nests JSON too deeply"),
    ("not-json", lambda h: b"{features", "the header of .* is not valid JSON"),
]


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize(
    ("change", "message"), [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES]
)
def test_corrupt_headers_are_refused(
    tmp_path: Path, fmt: str, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    folder, target = _saved(tmp_path, fmt)
    header, data = _split(target)
    _join(target, change(header), data)
    for mmap in (True, False):
        with pytest.raises(ValueError, match=message) as err:
            GalleryIndex.load(folder, mmap=mmap)
        assert str(err.value).startswith("GalleryIndex.load: ")
        assert str(target) in str(err.value)


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (lambda b: b[:-16], "outside the"),  # truncated
        (lambda b: b"\xff" * 64, r"header length \d+ exceeds the 56 bytes that follow it"),
        (lambda b: b"abc", "it has 3 bytes, fewer than the 8 of the header length"),
        (lambda b: b"", "it has 0 bytes"),
    ],
    ids=["truncated", "header-length", "short", "empty"],
)
def test_corrupt_files_are_refused(
    tmp_path: Path, fmt: str, raw: Callable[[bytes], bytes], message: str
) -> None:
    folder, target = _saved(tmp_path, fmt)
    target.write_bytes(raw(target.read_bytes()))
    for mmap in (True, False):
        with pytest.raises(ValueError, match=message):
            GalleryIndex.load(folder, mmap=mmap)


def _v2_rewrite(
    tmp_path: Path, edit: Callable[[dict[str, Any], bytearray], object]
) -> tuple[Path, Path]:
    folder, target = _saved(tmp_path, "v2")
    header, data = _split(target)
    buf = bytearray(data)
    _join(target, edit(header, buf) or header, bytes(buf))
    return folder, target


def _poke_path_byte(h: dict[str, Any], data: bytearray) -> None:
    data[_offsets(h, "path_bytes")[0] + len(PATHS[0])] = 0xFF  # first byte of path 1


def _swap_path_offsets(h: dict[str, Any], data: bytearray) -> None:
    start = _offsets(h, "path_offsets")[0]
    data[start + 8 : start + 24] = data[start + 16 : start + 24] + data[start + 8 : start + 16]


def _last_path_offset(h: dict[str, Any], data: bytearray) -> None:
    end = _offsets(h, "path_offsets")[1]
    data[end - 8 : end] = struct.pack("<q", 10**9)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_poke_path_byte, r"path 1 is not valid UTF-8"),
        (_swap_path_offsets, r"its path_offsets must rise from 0 to \d+"),
        (_last_path_offset, r"its path_offsets must rise from 0 to \d+"),
        (lambda h, d: _entry(h, "path_bytes", dtype="I8"), "tensor 'path_bytes' has dtype I8"),
        (
            lambda h, d: {**h, "__metadata__": {"format_version": "2"}},
            "__metadata__ lacks format='textreid.GalleryIndex'",
        ),
    ],
    ids=["utf8", "order", "range", "dtype", "format"],
)
def test_corrupt_v2_paths_and_metadata_are_refused(
    tmp_path: Path, edit: Callable[[dict[str, Any], bytearray], object], message: str
) -> None:
    folder, target = _v2_rewrite(tmp_path, edit)
    with pytest.raises(ValueError, match=message) as err:
        GalleryIndex.load(folder)
    assert str(err.value).startswith(f"GalleryIndex.load: {target} is not a valid gallery")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["ids"], "it has no 'features' tensor"),
        (["features", "path_bytes"], "one of path_bytes and path_offsets without the other"),
        (["features", "path_offsets"], "one of path_bytes and path_offsets without the other"),
    ],
)
def test_missing_tensors_are_refused(tmp_path: Path, names: list[str], message: str) -> None:
    from safetensors.torch import save_file

    tensors = {
        "features": torch.randn(2, 3),
        "ids": torch.arange(2),
        "path_bytes": torch.tensor([97, 98], dtype=torch.uint8),
        "path_offsets": torch.tensor([0, 1, 2]),
    }
    metadata = {"format": "textreid.GalleryIndex", "format_version": "2"}
    save_file({k: tensors[k] for k in names}, str(tmp_path / FILE), metadata=metadata)
    with pytest.raises(ValueError, match=message):
        GalleryIndex.load(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b'{"format_version": 1, "paths": "\xff"}', "is not valid JSON .*utf-8"),
        (b"[" * 100_000, "nests JSON too deeply"),
        (b"[1, 2]", "must hold a JSON object, got list"),
        (b'{"format_version": 1, "num_items": 5.0, "dim": 8}', "num_items and dim must be int"),
        (
            b'{"format_version": 1, "num_items": 5, "dim": 8, "paths": [1, 2, 3, 4, 5]}',
            "paths must be null or a list of 5 strings",
        ),
        (
            b'{"format_version": 1, "num_items": 5, "dim": 8, "paths": "abcde"}',
            "paths must be null or a list of 5 strings",
        ),
        (b'{"format_version": 2, "paths": []}', "format_version 2 indexes are one file"),
    ],
    ids=["json", "utf8", "deep", "list", "float", "int-paths", "str-paths", "v2-json"],
)
def test_corrupt_v1_metadata_is_refused(tmp_path: Path, text: bytes, message: str) -> None:
    folder = _v1_folder(tmp_path)
    (folder / "index.json").write_bytes(text)
    with pytest.raises(ValueError, match=message) as err:
        GalleryIndex.load(folder)
    assert str(err.value).startswith(f"GalleryIndex.load: {folder / 'index.json'} ")


def test_v1_metadata_is_read_with_a_size_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _v1_folder(tmp_path)
    size = (folder / "index.json").stat().st_size
    monkeypatch.setattr(index_module, "_MAX_V1_META_BYTES", size - 1)
    with pytest.raises(ValueError, match=f"has {size} bytes, more than the {size - 1} allowed"):
        GalleryIndex.load(folder)
    monkeypatch.setattr(index_module, "_MAX_V1_META_BYTES", size)
    assert len(GalleryIndex.load(folder)) == 5


@pytest.mark.skipif(not Path("/dev/urandom").exists(), reason="needs /dev/urandom")
@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_a_device_behind_a_symlink_is_refused(tmp_path: Path, fmt: str) -> None:
    """Reading /dev/urandom would never end (the old reader ran into MemoryError)."""
    folder, target = _saved(tmp_path, fmt)
    target = folder / "index.json" if fmt == "v1" else target
    target.unlink()
    target.symlink_to("/dev/urandom")
    with pytest.raises(ValueError, match=f"GalleryIndex.load: {target} is not a regular file"):
        GalleryIndex.load(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / FILE)
    with pytest.raises(ValueError, match="is not a regular file"):
        GalleryIndex.load(tmp_path)


def test_a_valid_symlink_loads(tmp_path: Path) -> None:
    _index().save(tmp_path / "real")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / FILE).symlink_to(tmp_path / "real" / FILE)
    assert GalleryIndex.load(tmp_path / "link").paths == PATHS


@functools.cache
def _valid_file(fmt: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        _, target = _saved(Path(d), fmt)
        return target.read_bytes()


def _load_or_refuse(folder: Path, target: Path, mmap: bool) -> None:
    """Our ValueError, or an index holding exactly what safetensors' own (strict) reader sees."""
    from safetensors.torch import load_file

    error = ""
    try:
        index = GalleryIndex.load(folder, mmap=mmap)
    except ValueError as e:
        error = str(e)
    if error:
        assert error.startswith("GalleryIndex.load: ")
        return
    ref = load_file(str(target))  # raises if we accepted a file the format forbids
    n = len(index)
    torch.testing.assert_close(index.features, ref["features"], rtol=0, atol=0, equal_nan=True)
    assert n >= 1
    if index.ids is None:
        assert "ids" not in ref
    else:
        assert torch.equal(index.ids, ref["ids"].long())
    assert index.paths is None or len(index.paths) == n


@st.composite
def _damaged(draw: st.DrawFn, fmt: str) -> bytes:
    data = bytearray(_valid_file(fmt))
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


@settings(max_examples=150)
@given(fmt=st.sampled_from(["v1", "v2"]), data=st.data(), mmap=st.booleans())
def test_damaged_files_load_or_raise_value_error(fmt: str, data: st.DataObject, mmap: bool) -> None:
    """Random byte changes and truncations: a consistent index or our ValueError, nothing else."""
    raw = data.draw(_damaged(fmt))
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        if fmt == "v1":
            shutil.copytree(V1, folder, dirs_exist_ok=True)
            (folder / "gallery.safetensors").write_bytes(raw)
        else:
            (folder / FILE).write_bytes(raw)
        _load_or_refuse(folder, folder / ("gallery.safetensors" if fmt == "v1" else FILE), mmap)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=150)
@given(
    fmt=st.sampled_from(["v1", "v2"]),
    name=st.sampled_from(["features", "ids", "path_bytes", "path_offsets", "__metadata__"]),
    field=st.sampled_from(["dtype", "shape", "data_offsets", None]),
    value=JSON_VALUES,
)
def test_mutated_headers_load_or_raise_value_error(
    fmt: str, name: str, field: str | None, value: object
) -> None:
    """Any JSON value in any header field: a consistent index or our ValueError."""
    with tempfile.TemporaryDirectory() as d:
        folder, target = _saved(Path(d), fmt)
        header, data = _split(target)
        if field is None or not isinstance(header.get(name), dict):
            header[name] = value
        else:
            header[name][field] = value
        _join(target, json.dumps(header).encode(), data)
        _load_or_refuse(folder, target, mmap=False)


def test_paths_must_be_one_per_row() -> None:
    with pytest.raises(TypeError, match=r"GalleryIndex.add: paths must be a sequence of paths"):
        GalleryIndex(torch.randn(3, 2), paths="abc")
    index = GalleryIndex(torch.randn(1, 2), paths=["a"])
    with pytest.raises(TypeError, match="got a single str 'xyz'"):
        index.add(torch.randn(3, 2), paths="xyz")
    with pytest.raises(TypeError, match="got a single bytes"):
        index.add(torch.randn(3, 2), paths=b"xyz")
    with pytest.raises(TypeError, match=r"paths\[1\] must be a str or os.PathLike, got int"):
        index.add(torch.randn(2, 2), paths=["a", 7])
    with pytest.raises(TypeError, match=r"got a single \w*Path"):
        index.add(torch.randn(1, 2), paths=Path("a"))
    index.add(torch.randn(2, 2), paths=(Path("b") / "c.png", "d.png"))
    assert index.paths == ["a", str(Path("b") / "c.png"), "d.png"]


def test_hits_must_be_rows_of_the_index() -> None:
    index = GalleryIndex(torch.randn(4, 2), torch.arange(10, 14), list("abcd"))
    scores = torch.zeros(1, 2)
    for bad in ([[0, -1]], [[4, 0]]):  # -1 used to wrap around to the last row
        result = SearchResult(scores, torch.tensor(bad))
        with pytest.raises(ValueError, match=r"GalleryIndex.ids_of: result.indices must lie in"):
            index.ids_of(result)
        with pytest.raises(ValueError, match=r"paths_of: result.indices must lie in \[0, 4\)"):
            index.paths_of(result)
    with pytest.raises(TypeError, match=r"must be an integer tensor, got torch\.float32"):
        index.ids_of(SearchResult(scores, torch.zeros(1, 2)))
    ok = SearchResult(scores, torch.tensor([[3, 0]]))
    assert index.ids_of(ok).tolist() == [[13, 10]]
    assert index.paths_of(ok) == [["d", "a"]]


def test_add_errors() -> None:
    index = _index()
    with pytest.raises(
        ValueError, match=r"GalleryIndex.add: the index has ids, so every batch must match"
    ):
        index.add(torch.randn(1, 8), paths=["x"])
    with pytest.raises(ValueError, match="the index has paths, so every batch must match"):
        index.add(torch.randn(1, 8), torch.tensor([1]))
    with pytest.raises(
        ValueError, match=r"GalleryIndex.add: paths has 2 entries but feats has 1 rows"
    ):
        index.add(torch.randn(1, 8), torch.tensor([1]), ["a", "b"])
    with pytest.raises(ValueError, match="ids has 2 entries but feats has 1 rows"):
        index.add(torch.randn(1, 8), torch.tensor([1, 2]), ["a"])
    with pytest.raises(ValueError, match="the index has width 8 but feats has width 3"):
        index.add(torch.randn(1, 3), torch.tensor([1]), ["a"])
    with pytest.raises(ValueError, match=r"holds torch.float32 on cpu, but feats is torch.float64"):
        index.add(torch.randn(1, 8, dtype=torch.float64), torch.tensor([1]), ["a"])
    with pytest.raises(ValueError, match="the index is empty"):
        GalleryIndex().search(torch.randn(1, 8), 1)
    with pytest.raises(ValueError, match="ids or paths given without features"):
        GalleryIndex(ids=torch.tensor([1]))
    plain = GalleryIndex(torch.randn(3, 2))
    hits = plain.search(torch.randn(1, 2), 1)
    with pytest.raises(ValueError, match="has no ids"):
        plain.ids_of(hits)
    with pytest.raises(ValueError, match="has no paths"):
        plain.paths_of(hits)
