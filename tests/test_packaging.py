"""pyproject.toml's promises: runtime dependencies are exactly what the package imports, and
every floor is in the form scripts/check_lowest_versions.sh checks."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "textreid"
IMPORT_NAMES = {"pillow": "PIL", "huggingface_hub": "huggingface_hub"}
"""Distribution names whose import name differs (case aside)."""
OPTIONAL = {"faiss", "tensorboard", "transformers", "open_clip", "timm"}
"""Imported only where a feature asks for them (test_public_api checks that they are lazy)."""

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the lowest supported Python
    tomllib = pytest.importorskip("tomli")


def _project() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project: dict[str, Any] = tomllib.load(f)["project"]
    return project


def _name(spec: str) -> str:
    m = re.match(r"[A-Za-z0-9_.\-]+", spec)
    assert m is not None, spec
    return m.group(0).lower().replace("-", "_")


def _third_party_imports() -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.update(n.partition(".")[0] for n in names)
    return {n for n in found if n not in stdlib and n != "textreid" and n != "__future__"}


def test_runtime_dependencies_are_what_the_package_imports() -> None:
    declared = {_name(s) for s in _project()["dependencies"]}
    imported = {IMPORT_NAMES.get(d, d) for d in declared}
    used = _third_party_imports() - OPTIONAL
    assert used <= imported, f"imported but not declared: {sorted(used - imported)}"
    assert imported <= used, f"declared but never imported: {sorted(imported - used)}"


def test_every_floor_is_a_plain_lower_bound() -> None:
    project = _project()
    specs = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for spec in specs:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+>=[0-9][0-9.]*", spec), (
            f"{spec!r}: scripts/check_lowest_versions.sh reads floors written as name>=X"
        )
    assert re.fullmatch(r">=\d+\.\d+", str(project["requires-python"]))


def test_tools_stay_out_of_the_runtime_dependencies() -> None:
    runtime = {_name(s) for s in _project()["dependencies"]}
    tools = {"pytest", "hypothesis", "mkdocs", "ruff", "mypy", "transformers", "faiss_cpu"}
    assert not runtime & tools


def test_the_lowest_versions_script_parses() -> None:
    script = ROOT / "scripts" / "check_lowest_versions.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
