"""The one registry idiom behind models, datasets, recipes and methods.

Each public ``register_*`` / ``list_*`` / lookup function is a thin wrapper around a
:class:`Registry`, so every kind of entry follows the same rules: a name is a non-empty
string, registering a taken name needs ``overwrite=True``, and an unknown name is an error
that lists the registered names and suggests the closest ones.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry", "import_submodules"]

T = TypeVar("T")


def import_submodules(package: str) -> None:
    """Import every public module of ``package`` (whose imports register their entries)."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    """Named callables of one kind (model configs, dataset readers, recipes, methods).

    Args:
        kind: what an entry is, for error messages (``"model"``, ``"dataset"``...).
        arg: the name of the registering function's callable argument, for its errors.
        normalize: maps a name to its key (e.g. ``str.lower`` for case-insensitive names);
            the default keeps names as given.
        discover: called once, before the first use, to register the built-in entries
            lazily (e.g. by :func:`import_submodules`), so importing the package stays light.
    """

    def __init__(
        self,
        kind: str,
        *,
        arg: str,
        normalize: Callable[[str], str] | None = None,
        discover: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self._arg = arg
        self._normalize = normalize
        self._discover = discover
        self._entries: dict[str, T] = {}

    def _ready(self) -> None:
        discover, self._discover = self._discover, None
        if discover is None:
            return
        try:
            discover()
        except BaseException:
            # A failed import is retried on the next use, which then reports it again.
            self._discover = discover
            raise

    def _normalized(self, name: str) -> str:
        key = name.strip()
        return self._normalize(key) if self._normalize is not None else key

    def _key(self, name: object, fn: str) -> str:
        if not isinstance(name, str):
            raise TypeError(f"{fn}: name must be a str, got {type(name).__name__}")
        key = self._normalized(name)
        if not key:
            raise ValueError(f"{fn}: name must be a non-empty string, got {name!r}")
        return key

    def register(self, name: str, obj: T, *, overwrite: bool = False, fn: str) -> None:
        """Add ``obj`` under ``name``.

        Built-in entries are discovered first, so a name that clashes with one is refused
        here rather than when the built-ins load later.

        Args:
            name: the entry's name.
            obj: a callable (factory, reader or builder).
            overwrite: replace an existing entry of that name.
            fn: the public function called, named in errors.

        Raises:
            TypeError: ``name`` is not a str or ``obj`` is not callable.
            ValueError: ``name`` is empty, or taken and ``overwrite`` is False.
        """
        key = self._key(name, fn)
        if not callable(obj):
            raise TypeError(f"{fn}: {self._arg} must be callable, got {type(obj).__name__}")
        self._ready()
        if key in self._entries and not overwrite:
            raise ValueError(
                f"{fn}: {key!r} is already registered; pass overwrite=True to replace it"
            )
        self._entries[key] = obj

    def get(self, name: str, *, fn: str) -> T:
        """The entry registered as ``name``.

        Raises:
            TypeError: ``name`` is not a str.
            ValueError: ``name`` is not registered; the message suggests the closest names
                and lists every registered one.
        """
        key = self._key(name, fn)
        self._ready()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"{fn}: unknown {self.kind} {name!r}; registered: {', '.join(self.names())}{hint}"
            )
        return self._entries[key]

    def unregister(self, name: str, *, fn: str) -> None:
        """Remove ``name`` if registered (tests and plugins undoing a registration)."""
        self._entries.pop(self._key(name, fn), None)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._ready()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._ready()
        return self._normalized(name) in self._entries
