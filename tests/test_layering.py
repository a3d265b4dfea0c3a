"""Package roles hold: imports only run down the layer order of CONTRIBUTING.md, and no
module reaches into another package's private names.

Imports are read with ``ast`` from every module of ``textreid/``, including the ones made
inside functions and under ``TYPE_CHECKING``: a lazy or type-only import still couples the two
packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "textreid"

#: Lowest first; a module may import from its own layer and the ones before it. Same as the
#: table in CONTRIBUTING.md.
LAYERS: list[set[str]] = [
    {
        "_checks",
        "_deprecation",
        "_gaussian_math",
        "_io",
        "_numerics",
        "_progress",
        "_registry",
        "_sources",
        "_token_math",
        "_tokenizer_base",
        "_untrusted",
        "_version",
        "config",
    },
    {"tokenization", "wordpiece", "text"},
    {"models", "heads"},
    {"losses"},
    {"retrieval"},
    {"data"},
    {"hub"},
    {"training"},
    {"methods"},
    {"recipes"},
    {"convert"},
    {"pipeline", "indexing"},
    {"visualize"},
    {"cli"},
    # The package facade and the test helpers may use anything.
    {"__init__", "testing"},
]


def _unit(module: str) -> str:
    """The layer unit of a dotted module name: ``textreid.losses.sdm`` -> ``losses``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (ROOT.parent / rel).with_suffix(".py").is_file() or (ROOT.parent / rel).is_dir()


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every textreid import."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> list[tuple[str, str | None, int]]:
    tree = ast.parse(source)
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "textreid":
                    found.append((alias.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "textreid":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if _is_module(sub):
                    found.append((sub, None, node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    return found


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"textreid.{unit} is in no layer of LAYERS; add it (and to CONTRIBUTING)")


def test_every_module_has_a_layer() -> None:
    for path in _modules():
        _layer(_unit(_module_name(path)))


def test_imports_run_down_the_layers() -> None:
    upward = []
    for path in _modules():
        me = _module_name(path)
        mine = _layer(_unit(me))
        for target, _, line in _imports(path):
            theirs = _layer(_unit(target))
            if theirs > mine:
                upward.append(f"{me}:{line} imports {target} (layer {theirs} > {mine})")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def _is_private_import(me: str, target: str, name: str | None) -> bool:
    """Whether module ``me`` importing ``name`` from ``target`` (or ``target`` itself) reaches
    into another package's private names."""
    if _unit(target) == _unit(me) or target.startswith("textreid._"):
        # Within a package private names are shared on purpose; the top-level private
        # modules (_checks, _numerics, _gaussian_math...) are the base every package uses.
        return False
    private_module = any(p.startswith("_") for p in target.split(".")[2:])
    return private_module or (name is not None and name.startswith("_"))


def test_no_module_imports_another_package_s_private_names() -> None:
    # Shared unchecked kernels belong in a base module (textreid/_gaussian_math.py,
    # textreid/_token_math.py), not in one package for another to reach into.
    found = sorted(
        f"{_module_name(path)}:{line} imports {target}{'.' + name if name else ''}"
        for path in _modules()
        for target, name, line in _imports(path)
        if _is_private_import(_module_name(path), target, name)
    )
    assert not found, "private names imported across packages:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("me", "target", "name", "private"),
    [
        ("textreid.losses.pcme", "textreid.heads.gaussian_distances", "_sample_logits", True),
        ("textreid.losses.efa", "textreid.heads._kernels", "maxsim", True),
        ("textreid.losses.efa", "textreid.heads._kernels", None, True),
        ("textreid.losses.csd", "textreid.heads.gaussian_distances", "GAUSSIAN_DISTANCES", False),
        ("textreid.losses.csd", "textreid._gaussian_math", "distance_matrix", False),
        ("textreid.heads.token_similarity", "textreid._token_math", None, False),
        ("textreid.losses.pcme", "textreid.losses._common", "pid_match", False),
        ("textreid.losses.pcme", "textreid.losses._gaussian", "_private_helper", False),
    ],
)
def test_private_import_rule(me: str, target: str, name: str | None, private: bool) -> None:
    # The package-wide check above passes on a clean tree; these cases show it would fail on
    # the kinds of imports it exists to catch.
    assert _is_private_import(me, target, name) is private


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from textreid.hub import Retriever\n", [("textreid.hub", "Retriever")]),
        ("def f():\n    import textreid.cli\n", [("textreid.cli", None)]),
        ("from textreid import data\n", [("textreid.data", None)]),
        ("from . import sdm\n", [("textreid.losses.sdm", None)]),
        ("from ._common import x\n", [("textreid.losses._common", "x")]),
        ("import torch\nfrom torch import nn\n", []),
    ],
)
def test_import_reader_sees_every_form(source: str, expected: list[tuple[str, str | None]]) -> None:
    # The checks above are only as good as this reader: lazy, relative and package-attribute
    # imports must all be seen (as if written in a module of textreid.losses).
    assert [(m, n) for m, n, _ in _imports_in(source, "textreid.losses")] == expected
