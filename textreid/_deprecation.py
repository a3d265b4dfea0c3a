"""Deprecation helper: public names change only through a warned, versioned path.

Semantic versioning: a public name or default is removed or changed only in a major release,
after at least one minor release in which using it emits a ``FutureWarning`` (shown to end
users by default, unlike ``DeprecationWarning``) naming the replacement and the version in
which it disappears.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

__all__ = ["deprecated", "moved", "warn_deprecated"]

_F = TypeVar("_F", bound=Callable[..., Any])


def warn_deprecated(
    name: str, *, since: str, removed_in: str, replacement: str | None = None, stacklevel: int = 3
) -> None:
    """Emit the standard ``FutureWarning`` for a deprecated name, argument or default."""
    msg = f"{name} is deprecated since textreid {since} and will be removed in {removed_in}"
    msg += f"; use {replacement} instead" if replacement else ""
    warnings.warn(msg, FutureWarning, stacklevel=stacklevel)


def deprecated(
    *, since: str, removed_in: str, replacement: str | None = None
) -> Callable[[_F], _F]:
    """Decorator for a deprecated function or class: warns on each call / instantiation.

    Example::

        @deprecated(since="0.2", removed_in="1.0", replacement="textreid.losses.SDMLoss")
        def sdm(...): ...
    """

    def wrap(obj: _F) -> _F:
        qualname = f"{obj.__module__}.{obj.__qualname__}"
        if isinstance(obj, type):
            original_init = cast(Any, obj).__init__

            @functools.wraps(original_init)
            def init(self: Any, *args: Any, **kwargs: Any) -> None:
                warn_deprecated(
                    qualname, since=since, removed_in=removed_in, replacement=replacement
                )
                original_init(self, *args, **kwargs)

            obj.__init__ = init  # type: ignore[misc]
            return cast(_F, obj)

        @functools.wraps(obj)
        def inner(*args: Any, **kwargs: Any) -> Any:
            warn_deprecated(qualname, since=since, removed_in=removed_in, replacement=replacement)
            return obj(*args, **kwargs)

        return cast(_F, inner)

    return wrap


def moved(
    module: str, targets: Mapping[str, str], *, since: str, removed_in: str
) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that still serves names moved to another module.

    Every lookup of an old name (``from old import name``, ``old.name``) warns, attributed to
    the line doing the lookup, so the warning points at the code to update; the object
    returned is the new one, so behaviour is unchanged.

    Args:
        module: the old module's ``__name__``.
        targets: old attribute name -> new dotted path (``"textreid.text.mask_for_mlm"``).
        since, removed_in: as :func:`warn_deprecated`.

    Returns:
        The function to bind as the module's ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:
        target = targets.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_deprecated(f"{module}.{name}", since=since, removed_in=removed_in, replacement=target)
        new_module, _, attr = target.rpartition(".")
        return getattr(importlib.import_module(new_module), attr)

    return __getattr__
