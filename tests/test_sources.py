"""One Hub resolution for ``Retriever.from_pretrained`` and ``load_clip``: same names, same
errors (the loopback FakeHub stands in for the Hub)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from textreid import Retriever
from textreid._sources import Source, is_repo_id, resolve_source
from textreid.models import load_clip
from textreid.testing import FakeHub


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("openai/clip-vit-base-patch16", True),
        ("org/name.v2", True),
        ("a/b", True),
        ("./org/name", False),
        ("/org/name", False),
        ("~/org/name", False),
        ("org/name/extra", False),
        ("org", False),
        ("org/na me", False),
        ("-org/name", False),
    ],
)
def test_repo_id_rule(text: str, ok: bool) -> None:
    assert is_repo_id(text) is ok


def test_local_paths_win_and_never_touch_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "weights.pt").write_bytes(b"")
    assert resolve_source("org/name", "f", files=False) == Source(folder=Path("org/name"))
    assert resolve_source("org/weights.pt", "f", files=True) == Source(file=Path("org/weights.pt"))
    # A file is not a retriever source: the same spelling is then a repo id.
    assert resolve_source("org/weights.pt", "f", files=False) == Source(repo_id="org/weights.pt")
    assert resolve_source("hf-hub:org/name", "f", files=False) == Source(repo_id="org/name")


@pytest.mark.parametrize("files", [True, False])
def test_names_that_are_nothing_are_refused_the_same_way(files: bool) -> None:
    with pytest.raises(
        ValueError, match=r"^f: 'not a repo' is not a valid hub repo id 'org/name'$"
    ):
        resolve_source("hf-hub:not a repo", "f", files=files)
    what = "is not an existing file or folder" if files else "is neither an existing folder nor"
    with pytest.raises(FileNotFoundError, match=rf"^f: './missing/x/y' {what}.*'hf-hub:org/name'"):
        resolve_source("./missing/x/y", "f", files=files)


def test_both_loaders_report_a_missing_repository_alike(tmp_path: Path) -> None:
    with FakeHub() as hub:
        kw = {"endpoint": hub.endpoint, "cache_dir": tmp_path / "c"}
        for load, fn in (
            (load_clip, "load_clip"),
            (Retriever.from_pretrained, "Retriever.from_pretrained"),
        ):
            with pytest.raises(
                FileNotFoundError,
                match=rf"^{fn}: repository 'org/absent' was not found on the hub; check the "
                "name, or pass token= for a private repository$",
            ):
                load("org/absent", **kw)  # type: ignore[operator]
            with pytest.raises(ValueError, match=rf"^{fn}: 'bad repo' is not a valid hub repo id"):
                load("hf-hub:bad repo", **kw)  # type: ignore[operator]
