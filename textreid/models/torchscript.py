"""Reading the tensors of a TorchScript archive without running anything from it.

``torch.jit.load`` executes the archive: every scripted class's ``__setstate__`` runs while the
module tree is rebuilt, and TorchScript can write files (``torch.from_file(..., shared=True)``).
OpenAI's CLIP checkpoints (``ViT-B-16.pt``...) are such archives, so this module reads them
as data instead.

A TorchScript archive is a zip with one top folder ``<root>/`` holding:

- ``data.pkl``: the module tree, pickled as objects of classes named ``__torch__.*`` whose
  state is a dict of attributes; tensors are ``torch._utils._rebuild_tensor_v2`` calls on
  storages that the pickle names by key (persistent ids);
- ``data/<key>``: the raw bytes of each storage, stored uncompressed;
- ``code/<qualifier as a path>.py``: each class's TorchScript source, which declares
  ``__parameters__ = [...]`` and ``__buffers__ = [...]``;
- ``constants.pkl``, ``*.debug_pkl``, ``version``, ``byteorder``: not needed here.

``data.pkl`` is read with a restricted unpickler: only the tensor rebuild function, storage
dtype markers, ``collections.OrderedDict`` and TorchScript's typed-list tags resolve; every
``__torch__.*`` class becomes an inert placeholder that records its state; anything else is
refused. Parameters and buffers are told apart from other tensor attributes (OpenAI's
``attn_mask``) by the ``__parameters__`` / ``__buffers__`` lines of ``code/``, read as text and
parsed with :func:`ast.literal_eval`. Storage sizes are checked against the zip entries, and
the storages together against the archive's size, before anything is allocated.
"""

from __future__ import annotations

import ast
import io
import math
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from textreid._untrusted import SAFE_FORMATS

__all__ = ["read_torchscript_state_dict"]

# data.pkl of OpenAI's ViT-L/14@336px is ~100 kB and its code files are under 100 kB each.
_MAX_PICKLE_BYTES = 64 << 20
_MAX_CODE_BYTES = 16 << 20

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_STORAGE_KEY = re.compile(r"^\w+$")


def _same(value: object, *_type_tag: object) -> object:
    return value


# TorchScript tags typed lists and dicts with these functions; for reading they are identities.
_JIT_PICKLE = {
    "build_intlist",
    "build_tensorlist",
    "build_doublelist",
    "build_boollist",
    "restore_type_tag",
}


@dataclass(frozen=True)
class _Storage:
    """A storage record: validated against its zip entry, read only when a tensor needs it."""

    key: str
    dtype: torch.dtype
    numel: int


class _TensorRef:
    """A tensor the pickle describes; materialised only for parameters and buffers."""

    __slots__ = ("offset", "size", "storage", "stride")

    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def __setstate__(self, state: object) -> None:
        raise pickle.UnpicklingError("a tensor cannot be given a state (BUILD on a tensor)")


class _ScriptObject:
    """Stands in for an object of a ``__torch__.*`` class: records its state, runs nothing."""

    qualname = ""
    # Class-level defaults: NEWOBJ creates instances without calling __init__.
    args: tuple[object, ...] = ()
    state: object = None

    def __init__(self, *args: object) -> None:
        self.args = args

    def __setstate__(self, state: object) -> None:
        self.state = state


def _rebuild_tensor(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    metadata: object = None,
) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(
            f"a tensor's storage is a {type(storage).__name__}, not a storage record"
        )
    if not (
        isinstance(offset, int)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and len(size) == len(stride)
        and all(isinstance(s, int) and s >= 0 for s in (offset, *size, *stride))
    ):
        raise pickle.UnpicklingError(
            f"a tensor has an invalid layout (offset {offset!r}, size {size!r}, stride {stride!r})"
        )
    numel = math.prod(size)
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    # numel <= storage numel also rules out stride-0 views that would allocate far more than
    # the file holds once copied.
    if offset > storage.numel or (numel and (extent > storage.numel or numel > storage.numel)):
        raise pickle.UnpicklingError(
            f"a tensor of size {list(size)} (stride {list(stride)}, offset {offset}) does not "
            f"fit its storage {storage.key!r} of {storage.numel} elements"
        )
    return _TensorRef(storage, offset, size, stride)


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl``: resolves only an allowlist, so nothing from the file runs."""

    def __init__(self, data: bytes, zf: zipfile.ZipFile, root: str, budget: int) -> None:
        super().__init__(io.BytesIO(data))
        self._zf = zf
        self._root = root
        self._budget = budget
        self._storages: dict[str, _Storage] = {}
        self._classes: dict[str, type[_ScriptObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (_ScriptObject,), {"qualname": qualname})
            return self._classes[qualname]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch.jit._pickle" and name in _JIT_PICKLE:
            return _same
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], torch.dtype)
            and isinstance(pid[2], str)
            and _STORAGE_KEY.match(pid[2])
            and isinstance(pid[3], str)
            and isinstance(pid[4], int)
            and pid[4] >= 0
        ):
            raise pickle.UnpicklingError(f"invalid storage record {pid!r}")
        _, dtype, key, _location, numel = pid
        known = self._storages.get(key)
        if known is not None:
            if (known.dtype, known.numel) != (dtype, numel):
                raise pickle.UnpicklingError(f"storage {key!r} is described twice, differently")
            return known
        entry = f"{self._root}/data/{key}"
        try:
            info = self._zf.getinfo(entry)
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key!r} has no entry {entry}") from None
        nbytes = numel * dtype.itemsize
        if (
            info.compress_type != zipfile.ZIP_STORED
            or info.file_size != nbytes
            or info.compress_size != nbytes
        ):
            raise pickle.UnpicklingError(
                f"storage {key!r} claims {numel} x {dtype} ({nbytes} bytes) but its entry "
                f"holds {info.file_size} bytes ({info.compress_size} stored)"
            )
        # Zip entries may overlap: bound the storages together by the archive's size.
        self._budget -= nbytes
        if self._budget < 0:
            raise pickle.UnpicklingError("the storages add up to more bytes than the archive")
        storage = _Storage(key, dtype, numel)
        self._storages[key] = storage
        return storage


@dataclass(frozen=True)
class _ClassDecl:
    parameters: tuple[str, ...]
    buffers: tuple[str, ...]


def _read_capped(zf: zipfile.ZipFile, name: str, cap: int) -> bytes:
    with zf.open(name) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ValueError(f"entry {name} is larger than {cap} bytes")
    return data


class _Code:
    """The ``__parameters__`` / ``__buffers__`` declarations of the archive's module classes."""

    def __init__(self, zf: zipfile.ZipFile, root: str) -> None:
        self._zf = zf
        self._root = root
        self._files: dict[str, str | None] = {}

    def _source(self, prefix: str) -> str | None:
        if prefix not in self._files:
            name = f"{self._root}/code/{prefix.replace('.', '/')}.py"
            try:
                raw = _read_capped(self._zf, name, _MAX_CODE_BYTES)
            except KeyError:
                self._files[prefix] = None
            else:
                self._files[prefix] = raw.decode("utf-8")
        return self._files[prefix]

    def module(self, qualname: str) -> _ClassDecl | None:
        """The declarations of ``qualname`` if the archive defines it as a module, else None."""
        prefix, _, name = qualname.rpartition(".")
        source = self._source(prefix)
        if source is None:
            return None
        head = re.search(
            rf"^class {re.escape(name)}\(Module\):\n((?:[ \t]+.*\n|\n)*)", source, re.M
        )
        if head is None:
            return None
        body = head.group(1)
        return _ClassDecl(
            self._names(body, "__parameters__", qualname),
            self._names(body, "__buffers__", qualname),
        )

    @staticmethod
    def _names(body: str, field: str, qualname: str) -> tuple[str, ...]:
        line = re.search(rf"^  {field} = (\[.*\])$", body, re.M)
        if line is None:
            return ()
        try:
            names = ast.literal_eval(line.group(1))
        except (ValueError, SyntaxError):
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"class {qualname} declares {field} as {line.group(1)!r}")
        return tuple(names)


def _materialise(
    ref: _TensorRef, zf: zipfile.ZipFile, root: str, cache: dict[str, Tensor]
) -> Tensor:
    storage = ref.storage
    base = cache.get(storage.key)
    if base is None:
        raw = bytearray(storage.numel * storage.dtype.itemsize)
        with zf.open(f"{root}/data/{storage.key}") as f:
            got = cast(zipfile.ZipExtFile, f).readinto(raw)
        if got != len(raw):
            raise ValueError(f"storage {storage.key!r} is truncated")
        base = (
            torch.frombuffer(raw, dtype=storage.dtype)
            if raw
            else torch.empty(0, dtype=storage.dtype)
        )
        cache[storage.key] = base
    if (
        ref.offset == 0
        and math.prod(ref.size) == storage.numel
        and base.view(ref.size).stride() == ref.stride
    ):
        # The usual case: the tensor is its whole storage; torch.jit.load shares it too.
        return base.view(ref.size)
    return torch.as_strided(base, ref.size, ref.stride, ref.offset).clone(
        memory_format=torch.contiguous_format
    )


def _archive_root(zf: zipfile.ZipFile, path: Path) -> str:
    roots = sorted({n[: -len("/data.pkl")] for n in zf.namelist() if n.endswith("/data.pkl")})
    roots = [r for r in roots if r and "/" not in r]
    if len(roots) != 1:
        raise ValueError(
            f"{path} is not a TorchScript archive with one top folder holding data.pkl "
            f"(found {roots or 'none'})"
        )
    return roots[0]


def _state_dict(
    root_obj: object, code: _Code, load: Callable[[_TensorRef], Tensor], path: Path
) -> dict[str, Tensor]:
    if not isinstance(root_obj, _ScriptObject):
        raise ValueError(f"{path}: data.pkl holds a {type(root_obj).__name__}, not a module")
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    stack: list[tuple[str, _ScriptObject]] = [("", root_obj)]
    while stack:
        prefix, obj = stack.pop()
        where = f"module {prefix.rstrip('.') or '<root>'} ({obj.qualname})"
        if id(obj) in seen:
            raise ValueError(f"{path}: {where} appears twice in the module tree")
        seen.add(id(obj))
        decl = code.module(obj.qualname)
        if decl is None:
            raise ValueError(f"{path}: {where} has no module definition under code/")
        state = obj.state
        if state is None:
            raise ValueError(f"{path}: {where} has no state; the archive is corrupt")
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise ValueError(
                f"{path}: {where} restores its state with its own __setstate__ code, which "
                "textreid does not run"
            )
        for name in (*decl.parameters, *decl.buffers):
            value = state.get(name)
            if value is None:
                # Declared but unset (e.g. MultiheadAttention.q_proj_weight): torch skips it too.
                continue
            if not isinstance(value, _TensorRef):
                raise ValueError(
                    f"{path}: {where} declares {name!r} a parameter or buffer, but it holds "
                    f"a {type(value).__name__}"
                )
            out[prefix + name] = load(value)
        children = [
            (f"{prefix}{name}.", value)
            for name, value in state.items()
            if isinstance(value, _ScriptObject) and code.module(value.qualname) is not None
        ]
        # Depth-first in attribute order, as Module.state_dict() lists them.
        stack.extend(reversed(children))
    return out


def read_torchscript_state_dict(
    path: str | os.PathLike[str], *, fn: str = "read_torchscript_state_dict"
) -> dict[str, Tensor]:
    """The parameters and buffers of a TorchScript archive, read without running it.

    The keys and values equal ``torch.jit.load(path).state_dict()`` (tensors on the CPU,
    contiguous) for archives made by ``torch.jit.save`` of scripted or traced modules, but no
    code or ``__setstate__`` from the archive runs.

    Args:
        path: The archive (e.g. OpenAI's ``ViT-B-16.pt``).
        fn: The public function to name in errors.

    Returns:
        ``{name: tensor}`` for every parameter and buffer of the module tree.

    Raises:
        ValueError: If the archive is corrupt, holds anything beyond modules and tensors
            (another global, a module restored by its own ``__setstate__``), or declares
            storages that do not match its entries; the message names the safe formats.
    """
    p = Path(path)
    refuse = (
        f"; textreid reads TorchScript archives as data and does not run their code. Safe "
        f"formats: {SAFE_FORMATS}"
    )
    try:
        with zipfile.ZipFile(p) as zf:
            root = _archive_root(zf, p)
            byteorder = f"{root}/byteorder"
            if byteorder in zf.namelist() and zf.read(byteorder) != b"little":
                raise ValueError(f"{p} stores big-endian tensors, which are not supported")
            data = _read_capped(zf, f"{root}/data.pkl", _MAX_PICKLE_BYTES)
            unpickler = _ArchiveUnpickler(data, zf, root, budget=p.stat().st_size)
            try:
                root_obj = unpickler.load()
            except Exception as err:
                # Only allowlisted callables run, so any error here means a corrupt or
                # hostile data.pkl.
                raise ValueError(f"{p}: cannot read {root}/data.pkl ({err})") from None
            cache: dict[str, Tensor] = {}
            return _state_dict(
                root_obj, _Code(zf, root), lambda ref: _materialise(ref, zf, root, cache), p
            )
    except ValueError as err:
        raise ValueError(f"{fn}: {err}{refuse}") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(
            f"{fn}: cannot read {p} as a TorchScript archive ({err}); the file is corrupt or "
            "truncated"
        ) from err
