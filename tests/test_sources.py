"""One Hub resolution for ``Retriever.from_pretrained`` and ``load_clip``: same names, same
errors; a local path is told from a Hub id before any network use (the loopback FakeHub
stands in for the Hub)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from textreid import Retriever
from textreid._sources import Source, is_repo_id, resolve_source
from textreid.models import load_clip
from textreid.testing import FakeHub


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every outgoing connection is refused and recorded; the test fails if any was tried
    (recorded too, since a library may swallow the refusal)."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[1:] or kwargs)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[object]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "weights.pt").write_bytes(b"")
    assert resolve_source("org/name", "f", files=False) == Source(folder=Path("org/name"))
    assert resolve_source("org/weights.pt", "f", files=True) == Source(file=Path("org/weights.pt"))
    # A file is not a retriever source, and never a repo id.
    with pytest.raises(FileNotFoundError, match=r"^f: 'org/weights.pt' is a file \(.*\), not a"):
        resolve_source("org/weights.pt", "f", files=False)
    assert resolve_source("hf-hub:org/name", "f", files=False) == Source(repo_id="org/name")
    # A dot is not a file extension: this stays a Hub id.
    assert resolve_source("Qwen/Qwen2.5-7B", "f", files=False) == Source(repo_id="Qwen/Qwen2.5-7B")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("runs/retriever", "'runs' is a local folder (write hf-hub:runs/retriever for the Hub)"),
        ("./retriever", "it starts like a path"),
        ("~/textreid-missing-folder", "it starts like a path"),
        ("runs/retriever/best", "it has more slashes than owner/name"),
        ("runs/retriever/", "it has more slashes than owner/name"),
        ("org/model.safetensors", "it ends with a file extension"),
        ("runs\\retriever", "it holds a path separator"),
    ],
)
@pytest.mark.parametrize("load", [Retriever.from_pretrained, load_clip])
def test_a_missing_path_is_a_local_error_before_any_network_use(
    name: str,
    why: str,
    load: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_network: list[object],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "other").mkdir(parents=True)
    fn = "load_clip" if load is load_clip else "Retriever.from_pretrained"
    what = "file or folder" if load is load_clip else "folder"
    looked = Path(name).expanduser().absolute()
    with pytest.raises(FileNotFoundError) as info:
        load(name)  # type: ignore[operator]
    message = str(info.value)
    assert message.startswith(f"{fn}: no such {what} {name!r} (looked for {looked}")
    assert f"; taken as a local path because {why};" in message
    assert "a Hub id has the form owner/name" in message


def test_the_error_lists_the_folder_the_path_was_looked_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[object]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "retriever-v2").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"runs holds: retriever-v2\)"):
        Retriever.from_pretrained("runs/retriever")


@pytest.mark.parametrize("files", [True, False])
def test_names_that_are_nothing_are_refused_the_same_way(files: bool) -> None:
    with pytest.raises(
        ValueError, match=r"^f: 'not a repo' is not a valid hub repo id 'org/name'$"
    ):
        resolve_source("hf-hub:not a repo", "f", files=files)
    what = "file or folder" if files else "folder"
    with pytest.raises(FileNotFoundError, match=rf"^f: no such {what} 'not-a-repo' \(looked for"):
        resolve_source("not-a-repo", "f", files=files)


def test_both_loaders_report_a_missing_repository_alike(tmp_path: Path) -> None:
    with FakeHub() as hub:
        kw = {"endpoint": hub.endpoint, "cache_dir": tmp_path / "c"}
        for load, fn in (
            (load_clip, "load_clip"),
            (Retriever.from_pretrained, "Retriever.from_pretrained"),
        ):
            with pytest.raises(
                FileNotFoundError,
                match=rf"^{fn}: repository 'org/absent' was not found on the hub "
                rf"\({hub.endpoint}\), and there is no local folder .*org/absent; check the id, "
                r"or for a private repository log in with `hf auth login` \(or pass token=\)$",
            ):
                load("org/absent", **kw)  # type: ignore[operator]
            with pytest.raises(ValueError, match=rf"^{fn}: 'bad repo' is not a valid hub repo id"):
                load("hf-hub:bad repo", **kw)  # type: ignore[operator]
