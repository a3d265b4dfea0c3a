"""A gallery of embeddings with ids and paths, exact search, and a memory-mappable file format.

On disk a :class:`GalleryIndex` is one safetensors file, ``gallery_index.safetensors``. Format
version 3 holds every feature tensor as ``features.<name>`` (``features.global`` ``[Ng, D]``,
``features.mean`` and ``features.log_var`` for Gaussian embeddings, ``features.parts``...), and
in the header's metadata the scorer config (``scorer``, JSON) and the fingerprint of the model
that encoded the gallery (``model_fingerprint``). An index of global features alone, without
scorer or fingerprint, is written as format version 2 (``features`` ``[Ng, D]``), which older
textreid releases read too. Both hold optionally ``ids`` ``[Ng]`` int64, and optionally the
paths as their UTF-8 bytes back to back (``path_bytes``, uint8) with ``path_offsets``
``[Ng + 1]`` int64 (path ``i`` is ``path_bytes[path_offsets[i]:path_offsets[i + 1]]``). One
file means one atomic rename: a reader, or a crash, sees the old index or the new one, never
new features with old paths. Folders written by textreid 0.1 (format version 1:
``gallery.safetensors`` + ``index.json``) still load.

``load(..., mmap=True)`` maps the features from the file instead of reading them, so opening a
large gallery costs neither time nor memory until rows are touched; a search then streams the
mapped rows chunk by chunk.

A *sharded* index is a folder of such files, ``shard-00000-of-00042.safetensors`` and on,
each a whole index of consecutive rows, written one at a time by :class:`ShardedIndexWriter`
(resumable: a crash leaves the completed shards) and a manifest ``sharded_index.json`` (each
shard's file name, rows and bytes) renamed into place last, so a folder with a manifest is
complete. :meth:`GalleryIndex.load_shard` gives each of ``world_size`` processes a run of
shards and its global offset; :meth:`GalleryIndex.load` reads them all.

The file is read as untrusted data: only a regular file is opened, the header length is
checked against the file and a cap before the header is read, and every dtype, shape and
offset is checked against the file before anything is mapped or allocated.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import reprlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from textreid._checks import (
    check_features,
    check_format_version,
    check_ids,
    check_int,
    check_same_width,
    check_tensor,
)
from textreid._io import (
    MAX_CONFIG_BYTES,
    atomic_path,
    atomic_write,
    folder_lock,
    open_regular,
    parse_json_object,
    read_json_object,
)
from textreid.retrieval.scorers import (
    Features,
    Scorer,
    as_features,
    check_feature_name,
    check_scorer,
    num_rows,
    scorer_from_config,
)
from textreid.retrieval.scores import DEFAULT_CHUNK_SIZE, DEFAULT_QUERY_BLOCK
from textreid.retrieval.search import Reranker, Screen, SearchResult, topk_search
from textreid.retrieval.token_rerank import TokenReranker

__all__ = ["SHARDED_MANIFEST", "GalleryIndex", "ShardedIndexWriter"]

FORMAT_VERSION = 3
# Format version 2: one file with global features only, written when nothing newer is needed.
_PLAIN_VERSION = 2
_LOAD = "GalleryIndex.load"
_FEATURE_PREFIX = "features."
# A fingerprint is a hex digest; a scorer config a handful of settings.
_MAX_FINGERPRINT_CHARS = 256
_MAX_SCORER_CONFIG_CHARS = 64 * 1024
_FORMAT = "textreid.GalleryIndex"
_FILE = "gallery_index.safetensors"
# Format version 1 (textreid 0.1): tensors and JSON metadata in two files.
_V1_TENSORS = "gallery.safetensors"
_V1_META = "index.json"
# safetensors refuses larger headers too; ours hold a handful of small entries.
_MAX_HEADER_BYTES = 100_000_000
# Version 1 kept the paths in index.json; 1 GiB holds tens of millions of them.
_MAX_V1_META_BYTES = 1 << 30
_MAX_RANK = 8
# No real dimension comes near this; it keeps shape products of empty tensors small.
_MAX_DIM = 1 << 48
# safetensors dtype names -> (numpy dtype to map the bytes with, torch dtype to view them as)
_DTYPES: dict[str, tuple[Any, torch.dtype]] = {
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.uint16, torch.bfloat16),
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
    "I16": (np.int16, torch.int16),
    "I8": (np.int8, torch.int8),
    "U8": (np.uint8, torch.uint8),
    "BOOL": (np.uint8, torch.bool),
}
_FLOATS = ("F64", "F32", "F16", "BF16")
_INTS = ("I64", "I32", "I16", "I8", "U8")


def _brief(value: object) -> str:
    """A repr short enough for an error message, whatever a file put there."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = 40
    r.maxlist = r.maxdict = 4
    r.maxlevel = 2
    return r.repr(value)


class _Corrupt(Exception):
    """What is wrong with a file; :func:`_reading` turns it into a ``ValueError`` naming it."""


@contextlib.contextmanager
def _reading(path: Path, fn: str) -> Iterator[None]:
    try:
        yield
    except _Corrupt as e:
        raise ValueError(f"{fn}: {path} is not a valid gallery index file: {e}") from None


@dataclass(frozen=True)
class _Entry:
    """One tensor of a safetensors header, checked against the file it came from."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset of the first byte in the file
    nbytes: int


def _is_int(v: object) -> bool:
    return type(v) is int  # JSON floats such as 8.0 and booleans are refused


def _read_header(f: IO[bytes], path: Path, fn: str) -> tuple[dict[str, str], dict[str, _Entry]]:
    """The metadata and tensor entries of a safetensors file, every entry within the file."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
        raise _Corrupt(f"it has {len(head)} bytes, fewer than the 8 of the header length")
    (n,) = struct.unpack("<Q", head)
    if n > min(size - 8, _MAX_HEADER_BYTES):
        raise _Corrupt(
            f"its header length {n} exceeds the {size - 8} bytes that follow it"
            if n > size - 8
            else f"its header length {n} exceeds the limit of {_MAX_HEADER_BYTES} bytes"
        )
    raw = f.read(n)
    if len(raw) != n:
        raise _Corrupt("it was truncated while being read")
    header = parse_json_object(raw, f"the header of {path}", fn)
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _Corrupt("its __metadata__ is not an object of strings")
    data_start, data_size = 8 + n, size - 8 - n
    entries: dict[str, _Entry] = {}
    for name, info in header.items():
        entries[name] = _entry(name, info, data_start, data_size)
    # As in safetensors itself, the tensors tile the data section: no overlap (one tensor's
    # bytes read as another's), no gap and nothing after the last one.
    covered = data_start
    for e in sorted(entries.values(), key=lambda e: (e.start, e.nbytes)):
        if e.start != covered:
            raise _Corrupt(
                f"tensor {e.name!r} starts at data byte {e.start - data_start}, but the tensors "
                f"before it end at {covered - data_start} (they must tile the data section)"
            )
        covered += e.nbytes
    if covered != size:
        raise _Corrupt(
            f"its tensors cover {covered - data_start} of the {data_size} bytes of the data section"
        )
    return meta, entries


def _entry(name: str, info: object, data_start: int, data_size: int) -> _Entry:
    if not isinstance(info, dict):
        raise _Corrupt(f"tensor {name!r} is described by a {type(info).__name__}, not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise _Corrupt(
            f"tensor {name!r} has dtype {_brief(dtype)}; expected one of {list(_DTYPES)}"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_RANK
        or not all(_is_int(s) and 0 <= s <= _MAX_DIM for s in shape)
    ):
        raise _Corrupt(
            f"tensor {name!r} has shape {_brief(shape)}; expected a list of at most "
            f"{_MAX_RANK} non-negative integers"
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise _Corrupt(
            f"tensor {name!r} has data_offsets {_brief(offsets)}; expected [begin, end] integers"
        )
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise _Corrupt(
            f"tensor {name!r} has data_offsets [{begin}, {end}], outside the {data_size}-byte "
            "data section"
        )
    nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype][0]).itemsize
    if end - begin != nbytes:
        raise _Corrupt(
            f"tensor {name!r} ({dtype}, shape {tuple(shape)}) needs {nbytes} bytes, but its "
            f"data_offsets span {end - begin}"
        )
    return _Entry(name, dtype, tuple(shape), data_start + begin, nbytes)


def _expect(
    entry: _Entry | None, dtypes: Iterable[str], shape: tuple[int | None, ...]
) -> _Entry | None:
    """``entry`` when its dtype is one of ``dtypes`` and its shape matches (``None``: any size)."""
    if entry is None:
        return None
    dtypes = tuple(dtypes)
    if entry.dtype not in dtypes:
        raise _Corrupt(f"tensor {entry.name!r} has dtype {entry.dtype}; expected one of {dtypes}")
    if len(entry.shape) != len(shape) or any(
        want is not None and got != want for got, want in zip(entry.shape, shape, strict=True)
    ):
        want_str = "(" + ", ".join("any" if w is None else str(w) for w in shape) + ")"
        raise _Corrupt(f"tensor {entry.name!r} has shape {entry.shape}; expected {want_str}")
    return entry


def _features_entry(entries: dict[str, _Entry]) -> _Entry:
    feats = _expect(entries.get("features"), _FLOATS, (None, None))
    if feats is None:
        raise _Corrupt("it has no 'features' tensor")
    if 0 in feats.shape:
        raise _Corrupt(f"its features have shape {feats.shape}; an index holds at least one row")
    return feats


def _tensor(f: IO[bytes], entry: _Entry, mmap: bool) -> Tensor:
    np_dtype, torch_dtype = _DTYPES[entry.dtype]
    arr: np.ndarray[Any, Any]
    # Masks are read (not mapped) so that every byte is checked to be 0 or 1: other bytes
    # would make bool tensors that compare neither equal to True nor to False.
    mmap = mmap and entry.dtype != "BOOL"
    # An unaligned start (possible in a hand-made file) is read into aligned memory instead.
    if mmap and entry.nbytes and entry.start % np.dtype(np_dtype).itemsize == 0:
        arr = np.memmap(f, dtype=np_dtype, mode="c", offset=entry.start, shape=entry.shape)
    else:
        f.seek(entry.start)
        count = math.prod(entry.shape)  # within the file: _entry checked it
        arr = np.fromfile(f, dtype=np_dtype, count=count)
        if arr.size != count:
            raise _Corrupt("it was truncated while being read")
        arr = arr.reshape(entry.shape)
        if entry.dtype == "BOOL" and arr.size and int(arr.max()) > 1:
            raise _Corrupt(f"tensor {entry.name!r} is BOOL but holds bytes other than 0 and 1")
    return torch.from_numpy(arr).view(torch_dtype)


def _encode_paths(paths: list[str], fn: str) -> tuple[Tensor, Tensor]:
    """``(path_bytes [total] uint8, path_offsets [Ng + 1] int64)``."""
    encoded = []
    for i, p in enumerate(paths):
        try:
            encoded.append(p.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise ValueError(
                f"{fn}: paths[{i}] = {p!r} cannot be written as UTF-8 ({e.reason})"
            ) from None
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return torch.from_numpy(blob), torch.from_numpy(offsets)


def _decode_paths(blob: Tensor, offsets: Tensor) -> list[str]:
    off = offsets.numpy()
    if off[0] != 0 or off[-1] != blob.numel() or bool((np.diff(off) < 0).any()):
        raise _Corrupt(
            f"its path_offsets must rise from 0 to {blob.numel()} (the size of path_bytes)"
        )
    data = blob.numpy().tobytes()
    out = []
    for i, (a, b) in enumerate(zip(off[:-1].tolist(), off[1:].tolist(), strict=True)):
        try:
            out.append(data[a:b].decode("utf-8"))
        except UnicodeDecodeError as e:
            raise _Corrupt(f"path {i} is not valid UTF-8 ({e.reason})") from None
    return out


_Loaded = tuple[dict[str, Tensor], Tensor | None, list[str] | None, Scorer | None, str | None]
"""Features, ids, paths, scorer and model fingerprint of a file."""


def _v3_features(entries: dict[str, _Entry]) -> dict[str, _Entry]:
    """The ``features.<name>`` entries of a version-3 file, all with one row count."""
    feats = {
        n[len(_FEATURE_PREFIX) :]: e for n, e in entries.items() if n.startswith(_FEATURE_PREFIX)
    }
    if not feats:
        raise _Corrupt(f"it has no '{_FEATURE_PREFIX}<name>' tensor")
    for name, e in feats.items():
        try:
            check_feature_name(name, "its features", _LOAD)
        except ValueError as err:
            raise _Corrupt(str(err)) from None
        if e.dtype not in (*_FLOATS, "BOOL"):
            raise _Corrupt(
                f"tensor {e.name!r} has dtype {e.dtype}; features are {_FLOATS} (or BOOL masks)"
            )
        if not e.shape or 0 in e.shape:
            raise _Corrupt(
                f"tensor {e.name!r} has shape {e.shape}; an index holds at least one row and "
                "no empty dimension"
            )
    rows = {e.shape[0] for e in feats.values()}
    if len(rows) > 1:
        listed = ", ".join(f"{e.name!r}: {e.shape[0]}" for e in feats.values())
        raise _Corrupt(f"its feature tensors have different row counts ({listed})")
    return feats


def _v3_metadata(meta: dict[str, str], path: Path) -> tuple[Scorer | None, str | None]:
    """The scorer and model fingerprint in a version-3 file's metadata."""
    raw, fingerprint = meta.get("scorer"), meta.get("model_fingerprint")
    if fingerprint is not None and not (0 < len(fingerprint) <= _MAX_FINGERPRINT_CHARS):
        raise _Corrupt(
            f"its model_fingerprint has {len(fingerprint)} characters; expected 1 to "
            f"{_MAX_FINGERPRINT_CHARS}"
        )
    if raw is None:
        return None, fingerprint
    if len(raw) > _MAX_SCORER_CONFIG_CHARS:
        raise _Corrupt(
            f"its scorer config has {len(raw)} characters, more than {_MAX_SCORER_CONFIG_CHARS}"
        )
    config = parse_json_object(raw.encode("utf-8"), f"the scorer config of {path}", _LOAD)
    return scorer_from_config(config, source=str(path)), fingerprint


def _load_file(path: Path, mmap: bool, fn: str) -> _Loaded:
    """Features, ids, paths, scorer and fingerprint of a version-2 or -3 index file."""
    with _reading(path, fn), open_regular(path, fn) as f:
        meta, entries = _read_header(f, path, fn)
        if meta.get("format") != _FORMAT:
            raise _Corrupt(f"its __metadata__ lacks format={_FORMAT!r}")
        raw_version = meta.get("format_version", "")
        version = int(raw_version) if raw_version.isdecimal() else raw_version
        found = check_format_version(version, FORMAT_VERSION, str(path), fn)
        if found == 1:
            raise _Corrupt(f"format_version {found} was never written as a single file")
        rest = {"ids", "path_bytes", "path_offsets"}
        if found == _PLAIN_VERSION:
            unknown = sorted(set(entries) - {"features", *rest})
            feat_entries = {"global": _features_entry(entries)}
            scorer, fingerprint = None, None
        else:
            unknown = sorted(n for n in set(entries) - rest if not n.startswith(_FEATURE_PREFIX))
            feat_entries = _v3_features(entries) if not unknown else {}
            scorer, fingerprint = _v3_metadata(meta, path)
        if unknown:
            raise _Corrupt(f"it holds unexpected tensors {unknown}")
        n = next(iter(feat_entries.values())).shape[0]
        ids = _expect(entries.get("ids"), _INTS, (n,))
        blob = _expect(entries.get("path_bytes"), ("U8",), (None,))
        offsets = _expect(entries.get("path_offsets"), ("I64",), (n + 1,))
        if (blob is None) != (offsets is None):
            raise _Corrupt("it has one of path_bytes and path_offsets without the other")
        paths = None
        if blob is not None and offsets is not None:
            paths = _decode_paths(_tensor(f, blob, False), _tensor(f, offsets, False))
        id_tensor = None if ids is None else _tensor(f, ids, mmap).to(torch.int64)
        feats = {name: _tensor(f, e, mmap) for name, e in feat_entries.items()}
        if scorer is not None:
            try:
                scorer.validate(feats, "gallery", fn, finite=False)
            except (TypeError, ValueError) as e:
                raise _Corrupt(f"its features do not fit its own scorer: {e}") from None
        return feats, id_tensor, paths, scorer, fingerprint


def _load_v1(folder: Path, mmap: bool, fn: str) -> _Loaded:
    """Features, ids and paths of a version-1 folder (``gallery.safetensors`` + ``index.json``)."""
    meta_path, tensors_path = folder / _V1_META, folder / _V1_TENSORS
    with _reading(meta_path, fn):
        meta = read_json_object(meta_path, max_bytes=_MAX_V1_META_BYTES, fn=fn)
        found = check_format_version(meta.get("format_version"), FORMAT_VERSION, str(meta_path), fn)
        if found != 1:
            raise _Corrupt(f"format_version {found} indexes are one file, {_FILE}")
        n, dim, paths = meta.get("num_items"), meta.get("dim"), meta.get("paths")
        if not (_is_int(n) and _is_int(dim)):
            raise _Corrupt("num_items and dim must be integers")
        if paths is not None and not (
            isinstance(paths, list) and len(paths) == n and all(isinstance(p, str) for p in paths)
        ):
            raise _Corrupt(f"paths must be null or a list of {n} strings")
    with _reading(tensors_path, fn), open_regular(tensors_path, fn) as f:
        _, entries = _read_header(f, tensors_path, fn)
        unknown = sorted(set(entries) - {"features", "ids"})
        if unknown:
            raise _Corrupt(f"it holds unexpected tensors {unknown}")
        feats = _features_entry(entries)
        if feats.shape != (n, dim):
            raise _Corrupt(
                f"it has features of shape {feats.shape}, but {meta_path} says {(n, dim)}"
            )
        ids = _expect(entries.get("ids"), _INTS, (n,))
        id_tensor = None if ids is None else _tensor(f, ids, mmap).to(torch.int64)
        return {"global": _tensor(f, feats, mmap)}, id_tensor, paths, None, None


def _check_paths(paths: object, fn: str) -> list[str]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{fn}: paths must be a sequence of paths, one per row, got a single "
            f"{type(paths).__name__} {_brief(paths)}"
        )
    if not isinstance(paths, Iterable):
        raise TypeError(f"{fn}: paths must be a sequence of str, got {type(paths).__name__}")
    out = []
    for i, p in enumerate(paths):
        s = os.fspath(p) if isinstance(p, os.PathLike) else p
        if not isinstance(s, str):
            raise TypeError(
                f"{fn}: paths[{i}] must be a str or os.PathLike, got {type(p).__name__}"
            )
        out.append(s)
    return out


def _check_fingerprint(value: object, fn: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{fn}: model_fingerprint must be a str, got {type(value).__name__}")
    if not 0 < len(value) <= _MAX_FINGERPRINT_CHARS:
        raise ValueError(
            f"{fn}: model_fingerprint must have 1 to {_MAX_FINGERPRINT_CHARS} characters, got "
            f"{len(value)}"
        )
    return value


def _check_batch(feats: object, fn: str) -> dict[str, Tensor]:
    """A batch for :meth:`GalleryIndex.add`: finite floating features (bool masks allowed)."""
    if isinstance(feats, Tensor):
        return {"global": check_features(feats, "feats", fn, dims="(B, D)")}
    f = as_features(feats, name="feats", fn=fn)  # type: ignore[arg-type]
    for key, t in f.items():
        name = f"feats[{key!r}]"
        if t.dtype == torch.bool:
            check_tensor(t, name, fn)
        else:
            check_features(t, name, fn, ndim=t.dim(), dims="(B, ...)")
    return f


class GalleryIndex:
    """Gallery features with optional integer ids and file paths, the scorer that compares
    them, and the fingerprint of the model that encoded them.

    Args:
        features: initial ``[Ng, D]`` features or a features mapping (``{"mean": ..,
            "log_var": ..}``, ``{"global": .., "parts": ..}``...; see
            :data:`~textreid.retrieval.Features`), or ``None`` for an empty index.
        ids: ``[Ng]`` integer ids (e.g. person ids), optional.
        paths: ``Ng`` paths (``str`` or ``os.PathLike``), optional.
        scorer: how queries are compared with these features; :meth:`search` uses it unless
            told otherwise, and refuses a scorer of another kind. ``None``: the global
            features' inner product (cosine with ``normalize=True``), as before scorers.
        model_fingerprint: an identifier of the model that encoded the features (e.g.
            :meth:`textreid.retrieval.models.RetrievalModel.fingerprint`), saved with the index
            so that a retriever can refuse an index built by another model.

    Features stay on the device and in the dtype they come in; :meth:`search` runs on the
    device of the query and moves gallery chunks there one at a time. Either every added batch
    carries ids (paths) or none does.

    Raises:
        TypeError: as :meth:`add`, or a ``scorer`` that is not a
            :class:`~textreid.retrieval.Scorer`, a fingerprint that is not a str.
        ValueError: as :meth:`add`, ids or paths given without features, features that lack
            a key the scorer needs, an empty or over-long fingerprint.

    Example:
        >>> index = GalleryIndex(torch.eye(3), ids=torch.tensor([7, 8, 9]), paths=["a", "b", "c"])
        >>> hits = index.search(torch.tensor([[0.0, 1.0, 0.2]]), k=2)
        >>> index.ids_of(hits).tolist(), index.paths_of(hits)
        ([[8, 9]], [['b', 'c']])
    """

    def __init__(
        self,
        features: Tensor | Features | None = None,
        ids: Tensor | None = None,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        *,
        scorer: Scorer | None = None,
        model_fingerprint: str | None = None,
    ) -> None:
        fn = "GalleryIndex"
        self._features: dict[str, Tensor] | None = None
        self._ids: Tensor | None = None
        self._paths: list[str] | None = None
        self._scorer = None if scorer is None else check_scorer(scorer, fn)
        self._fingerprint = _check_fingerprint(model_fingerprint, fn)
        self._source: Path | None = None
        if features is not None:
            self.add(features, ids, paths)
        elif ids is not None or paths is not None:
            raise ValueError("GalleryIndex: ids or paths given without features")

    def __len__(self) -> int:
        return 0 if self._features is None else num_rows(self._features)

    def __repr__(self) -> str:
        if self._features is None:
            return "GalleryIndex(empty)"
        extra = ""
        if set(self._features) != {"global"}:
            extra += f", features={sorted(self._features)}"
        if self._scorer is not None:
            extra += f", scorer={self._scorer!r}"
        values = list(self._features.values())
        f = next((t for t in values if t.is_floating_point()), values[0])
        return (
            f"GalleryIndex({len(self)} items, dim={f.shape[-1]}, dtype={f.dtype}, "
            f"device={f.device}, ids={self._ids is not None}, paths={self._paths is not None}"
            f"{extra})"
        )

    @property
    def features(self) -> Tensor:
        """``[Ng, D]`` global gallery features (:attr:`feature_map` holds every feature).

        Raises:
            ValueError: the index is empty, or holds no ``"global"`` features.
        """
        f = self.feature_map
        if "global" not in f:
            raise ValueError(
                f"GalleryIndex.features: the index holds {sorted(f)}, no 'global' features; "
                "read them from GalleryIndex.feature_map"
            )
        return f["global"]

    @property
    def feature_map(self) -> dict[str, Tensor]:
        """Every feature tensor by name, ``[Ng, ...]`` each (a new dict; tensors not copied).

        Raises:
            ValueError: the index is empty.
        """
        if self._features is None:
            raise ValueError("GalleryIndex: the index is empty; add() features first")
        return dict(self._features)

    @property
    def ids(self) -> Tensor | None:
        """``[Ng]`` int64 ids, or ``None``."""
        return self._ids

    @property
    def paths(self) -> list[str] | None:
        """``Ng`` paths, or ``None``."""
        return self._paths

    @property
    def scorer(self) -> Scorer | None:
        """The scorer the features are for, or ``None`` (global features, inner product)."""
        return self._scorer

    @property
    def model_fingerprint(self) -> str | None:
        """The fingerprint of the model that encoded the features, or ``None``."""
        return self._fingerprint

    @property
    def source(self) -> Path | None:
        """The file the index was loaded from, or ``None`` (built in memory)."""
        return self._source

    def add(
        self,
        feats: Tensor | Features,
        ids: Tensor | None = None,
        paths: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        """Append ``[B, D]`` features (or a features mapping) with ``[B]`` ids and ``B`` paths.

        Raises:
            TypeError: non-tensor or non-floating features (masks may be bool), non-integer
                ids, ``paths`` that is a single ``str`` (or path) rather than one per row, or an
                entry that is not a ``str`` / ``os.PathLike``.
            ValueError: wrong shapes, feature names, widths, dtypes or devices that differ
                from the index, non-finite values, a key the index's scorer needs missing,
                ids/paths whose presence differs from earlier batches or whose length differs
                from ``B``.
        """
        fn = "GalleryIndex.add"
        f = _check_batch(feats, fn)
        if self._scorer is not None:
            self._scorer.validate(f, "gallery", fn, finite=False, name="feats")
        n = num_rows(f)
        i = None if ids is None else check_ids(ids, "ids", fn, n, "feats").to(torch.int64)
        p = None if paths is None else _check_paths(paths, fn)
        if p is not None and len(p) != n:
            raise ValueError(f"{fn}: paths has {len(p)} entries but feats has {n} rows")
        if self._features is None:
            self._features, self._ids, self._paths = f, i, p
            return
        if set(f) != set(self._features):
            raise ValueError(
                f"{fn}: the index holds the features {sorted(self._features)} but feats has "
                f"{sorted(f)}; every batch must have the same"
            )
        for key, old in self._features.items():
            new = f[key]
            plain = key == "global"
            what = "the index" if plain else f"the index's {key!r}"
            name = "feats" if plain else f"feats[{key!r}]"
            if new.shape[1:] != old.shape[1:]:
                if new.dim() == 2 and old.dim() == 2:
                    check_same_width(fn, old, what, new, name)
                raise ValueError(
                    f"{fn}: {what} has rows of shape {tuple(old.shape[1:])} but {name} has "
                    f"{tuple(new.shape[1:])}"
                )
            if new.dtype != old.dtype or new.device != old.device:
                raise ValueError(
                    f"{fn}: {what} holds {old.dtype} on {old.device}, "
                    f"but {name} is {new.dtype} on {new.device}"
                )
        for name, new_meta, old_meta in (("ids", i, self._ids), ("paths", p, self._paths)):
            if (new_meta is None) != (old_meta is None):
                had = "has" if old_meta is not None else "has no"
                raise ValueError(f"{fn}: the index {had} {name}, so every batch must match")
        self._features = {key: torch.cat([old, f[key]]) for key, old in self._features.items()}
        if i is not None and self._ids is not None:
            self._ids = torch.cat([self._ids, i.to(self._ids.device)])
        if p is not None and self._paths is not None:
            self._paths.extend(p)

    def search(
        self,
        query: Tensor | Features,
        k: int,
        *,
        normalize: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        query_block: int = DEFAULT_QUERY_BLOCK,
        screen: Screen = "auto",
        scorer: Scorer | None = None,
        rerank: Reranker | None = None,
    ) -> SearchResult:
        """Exact top-``k`` of the queries; see :func:`~textreid.retrieval.topk_search`.

        Scores with ``scorer``, else with the index's own :attr:`scorer`, else by the inner
        product of global features (cosine with ``normalize=True``). With ``rerank`` (e.g. a
        :class:`~textreid.retrieval.TokenReranker`, reading the index's ``"tokens"``; the
        query features must hold the query's), the ``k`` hits are re-scored and re-ordered;
        only the hits' rows of a memory-mapped index are read. Use :meth:`ids_of` /
        :meth:`paths_of` on the result to name the hits.

        Raises:
            ValueError: the index is empty; a ``scorer`` of another kind than the index's
                (its features are not what that scorer reads: the message names the index's
                file and the remedy); a ``TokenReranker`` and an index without ``"tokens"``
                (the index's file and the remedy are named); and the errors of
                :func:`~textreid.retrieval.topk_search`.
        """
        fn = "GalleryIndex.search"
        features = self.feature_map
        if isinstance(rerank, TokenReranker) and "tokens" not in features:
            where = f"the gallery index {self._source}" if self._source else "this index"
            raise ValueError(
                f"{fn}: {where} holds no image 'tokens' (only {sorted(features)}), which "
                "token re-ranking reads; index the images again with a model that emits "
                "tokens and keep them (Retriever.index_images with the FMFA recipe's "
                "retriever keeps them), or re-compute the candidates' tokens "
                "(TokenReranker.rerank with a GalleryTokens callable, "
                "Retriever.search(..., gallery_images=...))"
            )
        if scorer is not None:
            check_scorer(scorer, fn)
            if self._scorer is not None and scorer.kind != self._scorer.kind:
                where = f"the gallery index {self._source}" if self._source else "this index"
                raise ValueError(
                    f"{fn}: {where} holds features for a {self._scorer.kind!r} scorer, but "
                    f"scorer= is {scorer!r} (kind {scorer.kind!r}); search it with a "
                    f"{self._scorer.kind!r} scorer, or index the gallery again with the "
                    "model that goes with this scorer"
                )
        use = scorer if scorer is not None else self._scorer
        return topk_search(
            query,
            # A re-ranker reads more than the global features (the tokens).
            features if use is not None or rerank is not None else self.features,
            k,
            chunk_size=chunk_size,
            query_block=query_block,
            normalize=normalize,
            screen=screen,
            scorer=use,
            rerank=rerank,
        )

    def _hit_indices(self, result: SearchResult, fn: str) -> Tensor:
        """``result.indices``, refused unless every entry is a row of this index (a negative
        index would otherwise wrap around to the end of the gallery)."""
        idx = getattr(result, "indices", None)
        if not isinstance(idx, Tensor) or idx.is_floating_point() or idx.is_complex():
            got = type(idx).__name__ if not isinstance(idx, Tensor) else str(idx.dtype)
            raise TypeError(f"{fn}: result.indices must be an integer tensor, got {got}")
        if idx.dtype == torch.bool:
            raise TypeError(f"{fn}: result.indices must be an integer tensor, got {idx.dtype}")
        if idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= len(self):
                raise ValueError(
                    f"{fn}: result.indices must lie in [0, {len(self)}) (the rows of this "
                    f"index), got values from {lo} to {hi}; was it a search of another gallery?"
                )
        return idx

    def ids_of(self, result: SearchResult) -> Tensor:
        """``[Nq, K]`` ids of the hits of ``result``.

        Raises:
            TypeError: ``result.indices`` is not an integer tensor.
            ValueError: the index has no ids, or an index is negative or past its end.
        """
        fn = "GalleryIndex.ids_of"
        if self._ids is None:
            raise ValueError(f"{fn}: the index has no ids")
        idx = self._hit_indices(result, fn)
        return self._ids[idx.to(self._ids.device)]

    def paths_of(self, result: SearchResult) -> list[list[str]]:
        """Paths of the hits of ``result``, one list of ``K`` per query.

        Raises:
            TypeError: ``result.indices`` is not an integer tensor.
            ValueError: the index has no paths, or an index is negative or past its end.
        """
        fn = "GalleryIndex.paths_of"
        if self._paths is None:
            raise ValueError(f"{fn}: the index has no paths")
        paths = self._paths
        return [[paths[j] for j in row] for row in self._hit_indices(result, fn).tolist()]

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index as ``directory/gallery_index.safetensors`` (the folder is created).

        Every feature tensor is written, with the scorer config and the model fingerprint
        (format version 3); an index of global features alone without either is written as
        format version 2, which older releases read too.

        The file is written beside its final name and renamed over it in one step, so an
        interrupted save leaves the previous index intact. A version-1 index in the same
        folder (``index.json`` + ``gallery.safetensors``) is removed once the new file is in
        place; a reader that sees both prefers the new file.

        Returns:
            The directory.

        Raises:
            ValueError: the index is empty, or a path cannot be encoded as UTF-8 (a lone
                surrogate).
        """
        out = Path(directory)
        self._write(out / _FILE, "GalleryIndex.save")
        if (out / _V1_META).is_file():
            for stale in (_V1_META, _V1_TENSORS):
                with contextlib.suppress(OSError):
                    (out / stale).unlink()
        return out

    def _write(self, path: Path, fn: str) -> None:
        """Write the index as one file at ``path``, renamed into place when complete."""
        from safetensors.torch import save_file

        feats = {key: t.detach().cpu().contiguous() for key, t in self.feature_map.items()}
        metadata = {"format": _FORMAT}
        if set(feats) == {"global"} and self._scorer is None and self._fingerprint is None:
            # Nothing a version-2 reader would miss: older releases can open the file.
            metadata["format_version"] = str(_PLAIN_VERSION)
            tensors = {"features": feats["global"]}
        else:
            metadata["format_version"] = str(FORMAT_VERSION)
            tensors = {_FEATURE_PREFIX + key: t for key, t in feats.items()}
            if self._scorer is not None:
                metadata["scorer"] = json.dumps(self._scorer.to_config(), sort_keys=True)
            if self._fingerprint is not None:
                metadata["model_fingerprint"] = self._fingerprint
        if self._ids is not None:
            tensors["ids"] = self._ids.cpu().contiguous()
        if self._paths is not None:
            tensors["path_bytes"], tensors["path_offsets"] = _encode_paths(self._paths, fn)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        mmap: bool = True,
        device: torch.device | str | None = None,
    ) -> GalleryIndex:
        """Open an index written by :meth:`save` (or by textreid 0.1), or a whole sharded index.

        Args:
            directory: the folder, or the ``gallery_index.safetensors`` file itself. A folder
                with a sharded index's manifest loads all its shards (:meth:`load_shard` with
                one process).
            mmap: map the features from the file (copy-on-write: the file is never written)
                instead of reading them; rows are paged in when a search touches them.
            device: move features and ids there (this reads them); default keep them on CPU.

        Raises:
            FileNotFoundError: a missing folder or file.
            ValueError: an unknown (newer) ``format_version``, or a file that is not a regular
                file or is corrupt: a header too large, not a JSON object of objects, dtypes,
                shapes or data offsets that do not fit the file, non-integer ids, paths that
                are not UTF-8, a scorer config of an unregistered kind or with settings its
                scorer refuses, features that lack a key of their scorer (the message names
                the file and what is wrong).
        """
        fn = _LOAD
        path = Path(directory)
        if path.is_dir() and (path / SHARDED_MANIFEST).exists():
            return cls.load_shard(path, 0, 1, mmap=mmap, device=device)[0]
        if path.is_dir() and not (path / _FILE).exists() and (path / _V1_META).exists():
            source = path / _V1_META
            feats, ids, paths, scorer, fingerprint = _load_v1(path, mmap, fn)
        else:
            source = path / _FILE if path.is_dir() else path
            feats, ids, paths, scorer, fingerprint = _load_file(source, mmap, fn)
        return cls._loaded((feats, ids, paths, scorer, fingerprint), source, device)

    @classmethod
    def _loaded(
        cls, loaded: _Loaded, source: Path, device: torch.device | str | None
    ) -> GalleryIndex:
        feats, ids, paths, scorer, fingerprint = loaded
        if device is not None:
            feats = {key: t.to(device) for key, t in feats.items()}
            ids = None if ids is None else ids.to(device)
        index = cls(scorer=scorer, model_fingerprint=fingerprint)
        index._features, index._ids, index._paths = feats, ids, paths
        index._source = source
        return index

    @classmethod
    def load_shard(
        cls,
        directory: str | os.PathLike[str],
        rank: int,
        world_size: int,
        *,
        mmap: bool = True,
        device: torch.device | str | None = None,
    ) -> tuple[GalleryIndex, int]:
        """Open the part of a sharded index (:meth:`save_sharded`, ``textreid index``) that
        belongs to ``rank`` of ``world_size`` processes.

        The shard files are split into ``world_size`` contiguous runs of (nearly) equal
        length; ``rank`` gets one run and the global index of its first row, ready for
        :func:`~textreid.retrieval.sharded_topk_search` (``gallery_offset=``). With one
        shard file per rank the features stay memory-mapped; several are concatenated in
        memory. A rank left without a shard (more ranks than shards) gets an index of no
        rows with the features' names and widths.

        Args:
            directory: the sharded index folder.
            rank: this process's rank, ``0 <= rank < world_size``.
            world_size: the number of processes.
            mmap: map the features from the files (as :meth:`load`).
            device: move features and ids there (as :meth:`load`).

        Returns:
            ``(index, offset)``: this rank's rows and the global index of the first one.

        Raises:
            FileNotFoundError: a missing folder, manifest or shard file.
            ValueError: ``rank`` / ``world_size`` out of range; a manifest or shard file that
                is corrupt, of another size than the manifest lists, or whose features, ids,
                paths, scorer or fingerprint differ from the first shard's; and the errors of
                :meth:`load` for each file.
        """
        fn = "GalleryIndex.load_shard"
        check_int(world_size, "world_size", fn, min_value=1)
        check_int(rank, "rank", fn, min_value=0)
        if rank >= world_size:
            raise ValueError(f"{fn}: rank must be below world_size={world_size}, got {rank}")
        loaded, offset, source = _load_sharded(Path(directory), rank, world_size, mmap, fn)
        return cls._loaded(loaded, source, device), offset

    def save_sharded(
        self, directory: str | os.PathLike[str], *, shard_size: int, resume: bool = False
    ) -> Path:
        """Write the index as shard files of ``shard_size`` rows plus a manifest (written
        last), for :meth:`load_shard`; see :class:`ShardedIndexWriter`.

        Returns:
            The directory.

        Raises:
            ValueError: the index is empty, a bad ``shard_size``; the errors of :meth:`save`.
        """
        feats = self.feature_map
        writer = ShardedIndexWriter(
            directory,
            rows=len(self),
            shard_size=shard_size,
            key=f"in-memory index of {len(self)} rows",
            scorer=self._scorer,
            model_fingerprint=self._fingerprint,
            resume=resume,
        )
        for i in writer.pending():
            a, b = writer.bounds(i)
            writer.write_shard(
                i,
                {key: t[a:b] for key, t in feats.items()},
                None if self._ids is None else self._ids[a:b],
                None if self._paths is None else self._paths[a:b],
            )
        return writer.finish()


# A sharded index: a folder of index files, each a whole index in the format above, and a
# manifest naming them, renamed into place last.
_SHARDED_FORMAT = "textreid.ShardedGalleryIndex"
_SHARDED_VERSION = 1
SHARDED_MANIFEST = "sharded_index.json"
"""The manifest of a sharded index folder (written last: its presence means complete)."""
_PLAN = "sharded_index.plan.json"
_SHARD_NAME = re.compile(r"shard-(\d{5})-of-(\d{5})\.safetensors")
_MAX_SHARDS = 99_999
# Each shard entry is a few dozen bytes.
_MAX_SHARDED_MANIFEST_BYTES = 16 << 20


def _shard_file(number: int, count: int) -> str:
    return f"shard-{number:05d}-of-{count:05d}.safetensors"


def _read_manifest(folder: Path, fn: str) -> list[tuple[str, int, int]]:
    """``(file, rows, bytes)`` of every shard listed by the manifest of ``folder``."""
    path = folder / SHARDED_MANIFEST
    raw = read_json_object(path, max_bytes=_MAX_SHARDED_MANIFEST_BYTES, fn=fn)
    with _reading(path, fn):
        if raw.get("format") != _SHARDED_FORMAT:
            raise _Corrupt(f"it lacks format={_SHARDED_FORMAT!r}")
        check_format_version(raw.get("format_version"), _SHARDED_VERSION, str(path), fn)
        shards = raw.get("shards")
        if not isinstance(shards, list) or not 1 <= len(shards) <= _MAX_SHARDS:
            raise _Corrupt(f"its shards must be a list of 1 to {_MAX_SHARDS} entries")
        out = []
        for i, entry in enumerate(shards):
            name = entry.get("file") if isinstance(entry, dict) else None
            rows = entry.get("rows") if isinstance(entry, dict) else None
            size = entry.get("bytes") if isinstance(entry, dict) else None
            if not (
                name == _shard_file(i, len(shards))
                and isinstance(rows, int)
                and isinstance(size, int)
                and _is_int(rows)
                and _is_int(size)
                and rows > 0
                and size > 0
            ):
                raise _Corrupt(
                    f"shard entry {i} is {_brief(entry)}; expected file "
                    f"{_shard_file(i, len(shards))!r} with positive integer rows and bytes"
                )
            out.append((_shard_file(i, len(shards)), rows, size))
        return out


def _load_sharded(
    folder: Path, rank: int, world_size: int, mmap: bool, fn: str
) -> tuple[_Loaded, int, Path]:
    """The shards of ``rank``, concatenated, and the global index of their first row."""
    shards = _read_manifest(folder, fn)
    lo, hi = rank * len(shards) // world_size, (rank + 1) * len(shards) // world_size
    offset = sum(rows for _, rows, _ in shards[:lo])
    parts: list[_Loaded] = []
    # A rank without a shard gets none of the rows of the first one: the right names,
    # dtypes and widths for a collective search.
    for name, rows, size in shards[lo:hi] if hi > lo else shards[:1]:
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(f"{fn}: {path} is missing; the sharded index is incomplete")
        with _reading(path, fn):
            found = path.stat().st_size
            if found != size:
                raise _Corrupt(
                    f"the manifest lists {size} bytes but the file has {found}; it is not the "
                    "shard that was written with this manifest"
                )
            loaded = _load_file(path, mmap, fn)
            if num_rows(loaded[0]) != rows:
                raise _Corrupt(f"it has {num_rows(loaded[0])} rows; the manifest lists {rows}")
        parts.append(loaded)
    feats, ids, paths, scorer, fingerprint = parts[0]
    for i, (f, i_, p, sc, fp) in enumerate(parts[1:], 1):
        if (
            set(f) != set(feats)
            or (i_ is None) != (ids is None)
            or (p is None) != (paths is None)
            or sc != scorer
            or fp != fingerprint
        ):
            raise ValueError(
                f"{fn}: {folder / shards[lo + i][0]} does not hold the same features, ids, "
                f"paths, scorer and model fingerprint as {folder / shards[lo][0]}; the sharded "
                "index is corrupt"
            )
    if hi == lo:
        feats = {key: t[:0] for key, t in feats.items()}
        ids = None if ids is None else ids[:0]
        paths = None if paths is None else []
    elif len(parts) > 1:
        feats = {key: torch.cat([part[0][key] for part in parts]) for key in feats}
        if ids is not None:
            ids = torch.cat([part[1] for part in parts if part[1] is not None])
        if paths is not None:
            paths = [q for part in parts if part[2] is not None for q in part[2]]
    return (feats, ids, paths, scorer, fingerprint), offset, folder / SHARDED_MANIFEST


class ShardedIndexWriter:
    """Writes a gallery index of ``rows`` rows as shard files, one shard at a time, resumably.

    Shard ``i`` holds rows ``i * shard_size`` to ``(i + 1) * shard_size`` (the last one the
    rest) as one index file (the single-file format of :class:`GalleryIndex`), renamed into
    place when complete. :meth:`finish` writes the manifest last, so a folder is a complete
    index exactly when it has one. A plan file written first records what is being indexed
    (``key``: e.g. a digest of the image list) and how; a writer opened later on the same
    folder with the same plan and ``resume=True`` skips the shards already written (after
    checking each one), so a crash costs at most the shard being written.

    Args:
        directory: the index folder (created).
        rows: rows of the whole index.
        shard_size: rows per shard.
        key: what the rows are, e.g. a SHA-256 of the image paths; a resumed writer must
            have the same.
        scorer: the scorer of the features, written into every shard.
        model_fingerprint: the fingerprint of the model that encodes them.
        resume: keep the shards of an earlier writer with the same plan. ``False``, or a
            folder without a plan, starts over: shard files, plan and manifest of an
            earlier writer are removed first.

    Raises:
        TypeError: a ``scorer`` that is not a :class:`~textreid.retrieval.Scorer`, a
            fingerprint that is not a str.
        ValueError: ``rows`` or ``shard_size`` not positive, more than 99,999 shards, a
            ``resume=True`` on a folder whose plan differs (the message names what differs).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        rows: int,
        shard_size: int,
        key: str,
        scorer: Scorer | None = None,
        model_fingerprint: str | None = None,
        resume: bool = True,
    ) -> None:
        fn = "ShardedIndexWriter"
        check_int(rows, "rows", fn, min_value=1)
        check_int(shard_size, "shard_size", fn, min_value=1)
        self._count = -(-rows // shard_size)
        if self._count > _MAX_SHARDS:
            raise ValueError(
                f"{fn}: {rows} rows in shards of {shard_size} make {self._count} shards, more "
                f"than {_MAX_SHARDS}; use a larger shard_size"
            )
        self._dir = Path(directory)
        self._rows, self._shard_size = rows, shard_size
        self._scorer = None if scorer is None else check_scorer(scorer, fn)
        self._fingerprint = _check_fingerprint(model_fingerprint, fn)
        plan = {
            "format": _SHARDED_FORMAT + ".plan",
            "rows": rows,
            "shard_size": shard_size,
            "key": key,
            "scorer": None if scorer is None else scorer.to_config(),
            "model_fingerprint": model_fingerprint,
        }
        self._dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(self._dir):
            old = None
            if resume and (self._dir / _PLAN).is_file():
                old = read_json_object(self._dir / _PLAN, max_bytes=MAX_CONFIG_BYTES, fn=fn)
            if old is not None and old != plan:
                differ = sorted(k for k in plan.keys() | old.keys() if plan.get(k) != old.get(k))
                raise ValueError(
                    f"{fn}: {self._dir} holds a partial index written with another plan "
                    f"(differing: {', '.join(differ)}); pass resume=False to start over, or "
                    "write to another folder"
                )
            if old is None:
                self._clear()
                atomic_write(self._dir / _PLAN, lambda f: f.write(json.dumps(plan).encode()))

    def _clear(self) -> None:
        """Remove an earlier writer's manifest, plan and shard files (nothing else)."""
        for path in self._dir.iterdir():
            if path.name in (SHARDED_MANIFEST, _PLAN) or _SHARD_NAME.fullmatch(path.name):
                path.unlink()

    @property
    def directory(self) -> Path:
        """The index folder."""
        return self._dir

    def bounds(self, number: int) -> tuple[int, int]:
        """Rows ``(start, stop)`` of shard ``number``."""
        start = number * self._shard_size
        return start, min(start + self._shard_size, self._rows)

    def pending(self) -> list[int]:
        """The shards still to write, in order (a shard file that does not read back as this
        plan's shard, e.g. one of another version, is pending again)."""
        out = []
        for i in range(self._count):
            path = self._dir / _shard_file(i, self._count)
            start, stop = self.bounds(i)
            try:
                feats, _, _, scorer, fingerprint = _load_file(path, True, "ShardedIndexWriter")
            except (OSError, ValueError):
                out.append(i)
                continue
            if (
                num_rows(feats) != stop - start
                or scorer != self._scorer
                or fingerprint != self._fingerprint
            ):
                out.append(i)
        return out

    def write_shard(
        self,
        number: int,
        features: Tensor | Features,
        ids: Tensor | None = None,
        paths: Sequence[str | os.PathLike[str]] | None = None,
    ) -> Path:
        """Write shard ``number`` (its file appears only when complete).

        Returns:
            The shard's file.

        Raises:
            ValueError: a shard number out of range, features whose row count is not the
                shard's; the errors of :class:`GalleryIndex`.
        """
        fn = "ShardedIndexWriter.write_shard"
        check_int(number, "number", fn, min_value=0)
        if number >= self._count:
            raise ValueError(f"{fn}: number must be below {self._count} shards, got {number}")
        index = GalleryIndex(
            features, ids, paths, scorer=self._scorer, model_fingerprint=self._fingerprint
        )
        start, stop = self.bounds(number)
        if len(index) != stop - start:
            raise ValueError(
                f"{fn}: shard {number} holds rows {start} to {stop}, {stop - start} rows, but "
                f"features has {len(index)}"
            )
        path = self._dir / _shard_file(number, self._count)
        index._write(path, fn)
        return path

    def finish(self) -> Path:
        """Write the manifest, making the folder a complete index.

        Returns:
            The index folder, for :meth:`GalleryIndex.load` / :meth:`GalleryIndex.load_shard`.

        Raises:
            ValueError: shards are missing (the message lists them).
        """
        missing = self.pending()
        if missing:
            raise ValueError(
                f"ShardedIndexWriter.finish: shard(s) {missing[:10]} of {self._count} are not "
                "written yet"
            )
        shards = []
        for i in range(self._count):
            name = _shard_file(i, self._count)
            start, stop = self.bounds(i)
            shards.append(
                {"file": name, "rows": stop - start, "bytes": (self._dir / name).stat().st_size}
            )
        manifest = {
            "format": _SHARDED_FORMAT,
            "format_version": _SHARDED_VERSION,
            "rows": self._rows,
            "shards": shards,
        }
        with folder_lock(self._dir):
            atomic_write(
                self._dir / SHARDED_MANIFEST,
                lambda f: f.write(json.dumps(manifest, indent=1).encode() + b"\n"),
            )
        return self._dir
