"""The public API is a promise: its surface is snapshot-tested and imports stay light.

To record a deliberate API change, regenerate the snapshot in the same commit and add a
CHANGELOG line::

    TEXTREID_UPDATE_API_SNAPSHOT=1 python -m pytest tests/test_public_api.py
"""

from __future__ import annotations

import enum
import importlib
import inspect
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).parent / "api_snapshot.txt"
PACKAGES = [
    "textreid",
    "textreid.losses",
    "textreid.losses.functional",
    "textreid.text",
    "textreid.heads",
    "textreid.models",
    "textreid.retrieval",
    "textreid.data",
    "textreid.training",
    "textreid.methods",
    "textreid.recipes",
    "textreid.convert",
    "textreid.testing",
]
OPTIONAL = ["transformers", "faiss", "tensorboard", "open_clip", "timm", "torch.utils.tensorboard"]


def _type_name(t: object) -> str:
    """One spelling of a type on every Python and torch version.

    ``repr`` of a typing alias changes across versions (``typing.Callable`` or
    ``collections.abc.Callable``, ``Union[A, B]`` or ``A | B``, ``ForwardRef('A')`` for an
    annotation of a named tuple).
    """
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is None:
        if t is None or t is type(None):
            return "None"
        if t is Ellipsis:
            return "..."
        if isinstance(t, str):
            return t
        if isinstance(t, typing.ForwardRef):
            return t.__forward_arg__
        if isinstance(t, list):  # the parameters of a Callable
            return "[" + ", ".join(map(_type_name, t)) + "]"
        if isinstance(t, type):
            module = "" if t.__module__ == "builtins" else t.__module__ + "."
            return module + t.__qualname__
        return repr(t)
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(map(_type_name, args))
    return f"{_type_name(origin)}[{', '.join(map(_type_name, args))}]"


def _signature(obj: object) -> str:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"
    params = list(sig.parameters.values())
    # A class without an __init__ of its own shows its base's: nn.Module's and Protocol's
    # are (*args, **kwargs), annotated or not depending on the torch and Python version.
    variadic = [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]
    if [p.kind for p in params] == variadic and inspect.isclass(obj):
        return "(*args, **kwargs)"
    params = [
        p if p.annotation is p.empty else p.replace(annotation=_type_name(p.annotation))
        for p in params
    ]
    ret = sig.return_annotation
    if ret is not sig.empty and ret is not None:  # a dataclass's __init__ returns None itself
        ret = _type_name(ret)
    return str(sig.replace(parameters=params, return_annotation=ret))


def _describe(qualname: str, obj: object) -> list[str]:
    if inspect.ismodule(obj):
        return [f"{qualname}: module"]
    # Before the class test: Python 3.10 takes ``Mapping[str, Tensor]`` for a class.
    if typing.get_origin(obj) is not None:
        return [f"{qualname}: alias {_type_name(obj)}"]
    if inspect.isclass(obj):
        if issubclass(obj, enum.Enum):
            return [f"{qualname}: enum {[m.name for m in obj]}"]
        lines = [f"{qualname}: class{_signature(obj)}"]
        # Inherited methods are part of a class's surface (SDMLoss.forward is PairLoss's):
        # walk the package's own bases, the most derived definition winning.
        members: dict[str, object] = {}
        for klass in reversed(obj.__mro__):
            if klass.__module__.partition(".")[0] == "textreid":
                members.update(vars(klass))
        for name, member in sorted(members.items()):
            if name.startswith("_"):
                continue
            if isinstance(member, property):
                lines.append(f"{qualname}.{name}: property")
            elif isinstance(member, (staticmethod, classmethod)):
                lines.append(f"{qualname}.{name}{_signature(member.__func__)}")
            elif inspect.isfunction(member):
                lines.append(f"{qualname}.{name}{_signature(member)}")
        return lines
    if callable(obj):
        return [f"{qualname}{_signature(obj)}"]
    return [f"{qualname}: {type(obj).__name__}"]


def render_api() -> str:
    lines: list[str] = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names = getattr(mod, "__all__", None)
        assert names is not None, f"{pkg} has no __all__"
        assert len(set(names)) == len(names), f"{pkg}.__all__ has duplicates"
        for name in sorted(names):
            assert not name.startswith("_") or name == "__version__", f"{pkg}.{name} is private"
            assert hasattr(mod, name), f"{pkg}.__all__ lists {name!r} but it does not exist"
            if name == "__version__":
                continue
            lines.extend(_describe(f"{pkg}.{name}", getattr(mod, name)))
    return "\n".join(lines) + "\n"


def test_api_matches_snapshot() -> None:
    current = render_api()
    if os.environ.get("TEXTREID_UPDATE_API_SNAPSHOT") == "1":
        SNAPSHOT.write_text(current)
    recorded = SNAPSHOT.read_text()
    if current != recorded:
        import difflib

        diff = "\n".join(
            difflib.unified_diff(
                recorded.splitlines(), current.splitlines(), "recorded", "current", lineterm=""
            )
        )
        pytest.fail(
            "The public API changed. If deliberate, regenerate tests/api_snapshot.txt "
            "(TEXTREID_UPDATE_API_SNAPSHOT=1) and add a CHANGELOG line.\n" + diff
        )


def test_version_is_exported() -> None:
    import textreid

    assert isinstance(textreid.__version__, str)
    assert textreid.__version__.count(".") == 2


def test_import_pulls_no_optional_dependency() -> None:
    code = (
        "import sys, textreid, textreid.losses, textreid.heads, textreid.models, "
        "textreid.retrieval, textreid.data, textreid.training, textreid.testing, "
        "textreid.methods, textreid.recipes, textreid.pipeline, textreid.cli\n"
        f"print(','.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import textreid imported optional modules: {out}"
