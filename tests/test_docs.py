"""Documentation promises: every public name is documented, every loss cites its paper and
states its formula, and the loss-zoo page covers the whole zoo.

The site itself is built (``mkdocs build --strict``) by the CI script, not here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "textreid"
LOSS_ZOO_PAGE = ROOT / "docs" / "losses.md"
DOCUMENTED_PACKAGES = [
    "textreid",
    "textreid.losses",
    "textreid.text",
    "textreid.heads",
    "textreid.models",
    "textreid.retrieval",
    "textreid.data",
    "textreid.training",
]
# A paper year, and a formula written as reStructuredText math or LaTeX.
YEAR = re.compile(r"\b(19[89]\d|20[0-4]\d)\b")
FORMULA = re.compile(r"\.\. math::|:math:`|\$\$|\\\[")


def _public_names() -> list[object]:
    return [
        pytest.param(pkg, name, id=f"{pkg}.{name}")
        for pkg in DOCUMENTED_PACKAGES
        for name in importlib.import_module(pkg).__all__
        if name != "__version__"
    ]


def _documented_constants() -> set[str]:
    """Module-level names followed by a string literal (an attribute docstring)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node, nxt in itertools.pairwise(body):
            documented = (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
                and nxt.value.value.strip()
            )
            if not documented:
                continue
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _loss_classes() -> list[type[nn.Module]]:
    losses = importlib.import_module("textreid.losses")
    found = [getattr(losses, n) for n in losses.__all__]
    # An abstract base (PairLoss) is no loss of the zoo: it has no paper and no formula.
    return [
        c
        for c in found
        if inspect.isclass(c) and c.__name__.endswith("Loss") and not inspect.isabstract(c)
    ]


@pytest.mark.parametrize(("package", "name"), _public_names())
def test_public_name_has_a_docstring(package: str, name: str) -> None:
    obj = getattr(importlib.import_module(package), name)
    # A type alias (``Features = Mapping[str, Tensor]``) is documented like a constant; Python
    # 3.10 takes it for a class and would read the docstring of ``Mapping``.
    alias = typing.get_origin(obj) is not None
    if not alias and (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)):
        doc = inspect.getdoc(obj) or ""
        assert doc.strip(), f"{package}.{name} has no docstring"
        # The class docstring must be its own, not one inherited from a base class.
        if inspect.isclass(obj):
            own = (obj.__doc__ or "").strip()
            assert own, f"{package}.{name} inherits its docstring"
    else:
        assert name in _documented_constants(), (
            f"{package}.{name} is a constant without an attribute docstring "
            '(a string literal on the line after the assignment: NAME = ...\\n"""What it is."""'
        )


def test_the_zoo_is_not_empty() -> None:
    names = {c.__name__ for c in _loss_classes()}
    assert {"SDMLoss", "IDLoss", "InfoNCELoss", "CMPMLoss", "TripletLoss"} <= names


@pytest.mark.parametrize(
    "cls",
    [pytest.param(c, id=c.__name__) for c in _loss_classes()],
)
def test_loss_docstring_cites_a_year_and_gives_a_formula(cls: type[nn.Module]) -> None:
    doc = cls.__doc__ or ""
    assert YEAR.search(doc), f"{cls.__name__}: the docstring names no paper year"
    assert FORMULA.search(doc), f"{cls.__name__}: the docstring has no math block or LaTeX"


@pytest.mark.parametrize("cls", _loss_classes(), ids=lambda c: c.__name__)
def test_loss_zoo_page_mentions_every_loss(cls: type[nn.Module]) -> None:
    page = LOSS_ZOO_PAGE.read_text(encoding="utf-8")
    assert re.search(rf"\b{cls.__name__}\b", page), f"docs/losses.md does not mention {cls}"


def test_loss_zoo_page_links_every_loss_to_its_module() -> None:
    page = LOSS_ZOO_PAGE.read_text(encoding="utf-8")
    for cls in _loss_classes():
        assert cls.__module__ in page, f"docs/losses.md does not name {cls.__module__}"


def test_help_shows_the_sdm_formula() -> None:
    code = "import textreid; help(textreid.losses.SDMLoss)"
    env = {**os.environ, "PAGER": "cat", "MANPAGER": "cat", "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    ).stdout
    assert "SDMLoss" in out
    assert r"\mathcal{L}_{sdm}" in out
    assert r"\operatorname{softmax}_j(s_{ij}/\tau)" in out
    assert "arXiv:2303.12501" in out


def test_docs_nav_pages_exist() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = re.findall(r":\s*([\w/.-]+\.md)\s*$", config, flags=re.MULTILINE)
    assert len(pages) >= 12
    missing = [p for p in pages if not (ROOT / "docs" / p).is_file()]
    assert not missing, f"mkdocs.yml lists pages that do not exist: {missing}"


def test_readme_quick_start_is_quoted_verbatim_in_getting_started() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, flags=re.DOTALL)
    assert block is not None
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    for line in block.group(1).strip().splitlines():
        assert line in page, f"getting-started.md lacks the quick-start command {line!r}"


MATHJAX = ROOT / "docs" / "javascripts" / "mathjax" / "tex-svg-full.js"
MATHJAX_SHA256 = "a4354ff94fd868aea0cc6eaaa79a57fda0588646fc46ee3700a349ee0a11cbe6"
"""MathJax 3.2.2's es5/tex-svg-full.js, as docs/javascripts/mathjax/SOURCE.txt records."""


def test_docs_load_nothing_from_another_site() -> None:
    # Offline readers (and a site behind a firewall) see formulas: no script, style sheet or
    # font comes from a CDN.
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert not re.findall(r"https?://\S+\.(?:js|css)\b", config)
    assert re.search(r"^\s*font:\s*false\s*$", config, flags=re.MULTILINE), (
        "mkdocs-material loads Google Fonts unless theme.font is false"
    )
    scripts = re.search(r"^extra_javascript:\n((?:\s+- .*\n)+)", config, flags=re.MULTILINE)
    assert scripts is not None
    for entry in re.findall(r"- (\S+)", scripts.group(1)):
        assert (ROOT / "docs" / entry).is_file(), f"mkdocs.yml loads {entry}, not in docs/"
    assert "javascripts/mathjax/tex-svg-full.js" in scripts.group(1)


def test_vendored_mathjax_is_the_recorded_release() -> None:
    import hashlib

    digest = hashlib.sha256(MATHJAX.read_bytes()).hexdigest()
    assert digest == MATHJAX_SHA256
    source = (MATHJAX.parent / "SOURCE.txt").read_text(encoding="utf-8")
    assert f"sha256 {digest}" in source
    assert "Apache License" in (MATHJAX.parent / "LICENSE").read_text(encoding="utf-8")
