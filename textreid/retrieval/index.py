"""A gallery of embeddings with ids and paths, exact search, and a memory-mappable file format.

On disk a :class:`GalleryIndex` is a folder with ``gallery.safetensors`` (``features``
``[Ng, D]`` and, when present, ``ids`` ``[Ng]`` int64) and ``index.json`` (``format_version``,
``num_items``, ``dim``, ``dtype``, ``paths``). ``load(..., mmap=True)`` maps the features
from the file instead of reading them, so opening a large gallery costs neither time nor
memory until rows are touched; a search then streams the mapped rows chunk by chunk.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from textreid._checks import check_features, check_format_version, check_ids, check_same_width
from textreid.retrieval.scores import DEFAULT_CHUNK_SIZE, DEFAULT_QUERY_BLOCK
from textreid.retrieval.search import Screen, SearchResult, topk_search

__all__ = ["GalleryIndex"]

FORMAT_VERSION = 1
_TENSORS = "gallery.safetensors"
_META = "index.json"
# safetensors dtype names -> (numpy dtype to map the bytes with, torch dtype to view them as)
_DTYPES: dict[str, tuple[Any, torch.dtype]] = {
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.uint16, torch.bfloat16),
    "I64": (np.int64, torch.int64),
}


def _read_safetensors(path: Path, mmap: bool, fn: str) -> dict[str, Tensor]:
    """Tensors of a safetensors file, memory-mapped (copy-on-write) or read into memory.

    The header is parsed here rather than through ``safe_open`` because ``get_tensor`` copies
    every tensor into fresh memory; a numpy memmap of the data section does not.
    """
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            size = path.stat().st_size
            if n > size - 8:
                raise ValueError("header length past the end of the file")
            header = json.loads(f.read(n))
        out: dict[str, Tensor] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            np_dtype, torch_dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
            count = int(np.prod(shape))
            if end - begin != count * np.dtype(np_dtype).itemsize or 8 + n + end > size:
                raise ValueError(f"tensor {name!r} does not fit the file")
            arr: np.ndarray[Any, Any]
            if mmap:
                arr = np.memmap(path, dtype=np_dtype, mode="c", offset=8 + n + begin, shape=shape)
            else:
                arr = np.fromfile(path, dtype=np_dtype, count=count, offset=8 + n + begin)
                arr = arr.reshape(shape)
            out[name] = torch.from_numpy(arr).view(torch_dtype)
        return out
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{fn}: {path} is not a valid safetensors file ({e})") from e


class GalleryIndex:
    """Gallery embeddings ``[Ng, D]`` with optional integer ids and file paths.

    Args:
        features: initial ``[Ng, D]`` features (or ``None`` for an empty index).
        ids: ``[Ng]`` integer ids (e.g. person ids), optional.
        paths: ``Ng`` strings (e.g. image files), optional.

    Features stay on the device and in the dtype they come in; :meth:`search` runs on the
    device of the query and moves gallery chunks there one at a time. Either every added batch
    carries ids (paths) or none does.

    Example:
        >>> index = GalleryIndex(torch.eye(3), ids=torch.tensor([7, 8, 9]), paths=["a", "b", "c"])
        >>> hits = index.search(torch.tensor([[0.0, 1.0, 0.2]]), k=2)
        >>> index.ids_of(hits).tolist(), index.paths_of(hits)
        ([[8, 9]], [['b', 'c']])
    """

    def __init__(
        self,
        features: Tensor | None = None,
        ids: Tensor | None = None,
        paths: Sequence[str] | None = None,
    ) -> None:
        self._features: Tensor | None = None
        self._ids: Tensor | None = None
        self._paths: list[str] | None = None
        if features is not None:
            self.add(features, ids, paths)
        elif ids is not None or paths is not None:
            raise ValueError("GalleryIndex: ids or paths given without features")

    def __len__(self) -> int:
        return 0 if self._features is None else self._features.shape[0]

    def __repr__(self) -> str:
        if self._features is None:
            return "GalleryIndex(empty)"
        f = self._features
        return (
            f"GalleryIndex({len(self)} items, dim={f.shape[1]}, dtype={f.dtype}, "
            f"device={f.device}, ids={self._ids is not None}, paths={self._paths is not None})"
        )

    @property
    def features(self) -> Tensor:
        """``[Ng, D]`` gallery features."""
        if self._features is None:
            raise ValueError("GalleryIndex: the index is empty; add() features first")
        return self._features

    @property
    def ids(self) -> Tensor | None:
        """``[Ng]`` int64 ids, or ``None``."""
        return self._ids

    @property
    def paths(self) -> list[str] | None:
        """``Ng`` paths, or ``None``."""
        return self._paths

    def add(
        self, feats: Tensor, ids: Tensor | None = None, paths: Sequence[str] | None = None
    ) -> None:
        """Append ``[B, D]`` features with their ``[B]`` ids and ``B`` paths.

        Raises:
            TypeError: non-tensor or non-floating features, non-integer ids.
            ValueError: wrong shapes, a width, dtype or device that differs from the index,
                non-finite values, ids/paths whose presence differs from earlier batches or
                whose length differs from ``B``.
        """
        fn = "GalleryIndex.add"
        f = check_features(feats, "feats", fn, dims="(B, D)")
        n = f.shape[0]
        i = None if ids is None else check_ids(ids, "ids", fn, n, "feats").to(torch.int64)
        p = None if paths is None else [str(s) for s in paths]
        if p is not None and len(p) != n:
            raise ValueError(f"{fn}: paths has {len(p)} entries but feats has {n} rows")
        if self._features is None:
            self._features, self._ids, self._paths = f, i, p
            return
        check_same_width(fn, self._features, "the index", f, "feats")
        if f.dtype != self._features.dtype or f.device != self._features.device:
            raise ValueError(
                f"{fn}: the index holds {self._features.dtype} on {self._features.device}, "
                f"but feats is {f.dtype} on {f.device}"
            )
        for name, new, old in (("ids", i, self._ids), ("paths", p, self._paths)):
            if (new is None) != (old is None):
                had = "has" if old is not None else "has no"
                raise ValueError(f"{fn}: the index {had} {name}, so every batch must match")
        self._features = torch.cat([self._features, f])
        if i is not None and self._ids is not None:
            self._ids = torch.cat([self._ids, i.to(self._ids.device)])
        if p is not None and self._paths is not None:
            self._paths.extend(p)

    def search(
        self,
        query: Tensor,
        k: int,
        *,
        normalize: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        query_block: int = DEFAULT_QUERY_BLOCK,
        screen: Screen = "auto",
    ) -> SearchResult:
        """Exact top-``k`` of ``[Nq, D]`` queries; see :func:`~textreid.retrieval.topk_search`.

        Use :meth:`ids_of` / :meth:`paths_of` on the result to name the hits.
        """
        return topk_search(
            query,
            self.features,
            k,
            chunk_size=chunk_size,
            query_block=query_block,
            normalize=normalize,
            screen=screen,
        )

    def ids_of(self, result: SearchResult) -> Tensor:
        """``[Nq, K]`` ids of the hits of ``result``."""
        if self._ids is None:
            raise ValueError("GalleryIndex.ids_of: the index has no ids")
        return self._ids[result.indices.to(self._ids.device)]

    def paths_of(self, result: SearchResult) -> list[list[str]]:
        """Paths of the hits of ``result``, one list of ``K`` per query."""
        if self._paths is None:
            raise ValueError("GalleryIndex.paths_of: the index has no paths")
        paths = self._paths
        return [[paths[j] for j in row] for row in result.indices.tolist()]

    def save(self, directory: str | Path) -> Path:
        """Write ``gallery.safetensors`` and ``index.json`` into ``directory`` (created).

        Returns:
            The directory.
        """
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"features": self.features.detach().cpu().contiguous()}
        if self._ids is not None:
            tensors["ids"] = self._ids.cpu().contiguous()
        save_file(tensors, str(out / _TENSORS))
        meta = {
            "format_version": FORMAT_VERSION,
            "num_items": len(self),
            "dim": self.features.shape[1],
            "dtype": str(self.features.dtype).removeprefix("torch."),
            "paths": self._paths,
        }
        (out / _META).write_text(json.dumps(meta))
        return out

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        mmap: bool = True,
        device: torch.device | str | None = None,
    ) -> GalleryIndex:
        """Open an index written by :meth:`save`.

        Args:
            directory: the folder.
            mmap: map the features from the file (copy-on-write: the file is never written)
                instead of reading them; rows are paged in when a search touches them.
            device: move features and ids there (this reads them); default keep them on CPU.

        Raises:
            FileNotFoundError: a missing folder or file.
            ValueError: an unknown (newer) ``format_version``, a corrupt file, or a file whose
                contents disagree with ``index.json``.
        """
        fn = "GalleryIndex.load"
        folder = Path(directory)
        meta_path = folder / _META
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{fn}: {meta_path} is not valid JSON ({e})") from e
        if not isinstance(meta, dict):
            raise ValueError(f"{fn}: {meta_path} must hold a JSON object")
        check_format_version(meta.get("format_version"), FORMAT_VERSION, str(meta_path), fn)
        tensors = _read_safetensors(folder / _TENSORS, mmap, fn)
        feats, ids, paths = tensors.get("features"), tensors.get("ids"), meta.get("paths")
        n, dim = meta.get("num_items"), meta.get("dim")
        if feats is None or feats.dim() != 2 or tuple(feats.shape) != (n, dim):
            got = None if feats is None else tuple(feats.shape)
            raise ValueError(
                f"{fn}: {folder / _TENSORS} has features of shape {got}, but {meta_path} says "
                f"({n}, {dim})"
            )
        if (ids is not None and tuple(ids.shape) != (n,)) or (
            paths is not None and len(paths) != n
        ):
            raise ValueError(f"{fn}: ids or paths in {folder} do not have {n} entries")
        if device is not None:
            feats = feats.to(device)
            ids = None if ids is None else ids.to(device)
        index = cls()
        index._features, index._ids = feats, ids
        index._paths = None if paths is None else [str(p) for p in paths]
        return index
