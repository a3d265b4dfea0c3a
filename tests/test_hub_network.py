"""What a user sees when the Hub cannot be used: an unreachable or failing Hub, offline
settings, and files missing from the cache (the loopback FakeHub stands in for the Hub)."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from textreid import Retriever
from textreid.hub import HubConnectionError
from textreid.models import create_model, load_clip
from textreid.testing import FakeHub


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def repo_files(tmp_path: Path) -> dict[str, bytes]:
    torch.manual_seed(0)
    return _files(
        Retriever(create_model("tiny", image_size=(64, 32))).save_pretrained(tmp_path / "r")
    )


def _cache_folder(cache: Path, repo_id: str) -> str:
    return str(cache / ("models--" + repo_id.replace("/", "--")))


def test_an_unreachable_hub_is_a_connection_error_at_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with FakeHub() as hub, hub.offline():
        for load, fn in (
            (Retriever.from_pretrained, "Retriever.from_pretrained"),
            (load_clip, "load_clip"),
        ):
            start = time.perf_counter()
            with pytest.raises(HubConnectionError) as info:
                load("org/tiny", endpoint=hub.endpoint, cache_dir=cache)  # type: ignore[operator]
            # huggingface_hub alone retries a missing file for ~23 s before giving up.
            assert time.perf_counter() - start < 5
            assert isinstance(info.value, ConnectionError)
            assert not isinstance(info.value, FileNotFoundError)
            message = str(info.value)
            assert message.startswith(f"{fn}: 'config.json' of 'org/tiny' (revision 'main') is not")
            assert f"in the Hub cache ({_cache_folder(cache, 'org/tiny')})" in message
            assert f"the hub at {hub.endpoint} could not be reached (" in message
            assert message.endswith(
                "check your network connection (and proxy settings), or pass a local folder "
                "holding the files"
            )


def test_a_failing_hub_is_asked_once_per_load(repo_files: dict[str, bytes], tmp_path: Path) -> None:
    with FakeHub() as hub:
        hub.add_repo("org/tiny", repo_files)
        with hub.failing(503), pytest.raises(HubConnectionError, match=r"answered HTTP 503"):
            Retriever.from_pretrained("org/tiny", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
        assert [(q.method, q.path.rsplit("/", 1)[-1]) for q in hub.requests] == [
            ("HEAD", "config.json")
        ]


def test_a_cached_repository_loads_while_the_hub_is_unreachable(
    repo_files: dict[str, bytes], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with FakeHub() as hub:
        hub.add_repo("org/tiny", repo_files)
        online = Retriever.from_pretrained("org/tiny", endpoint=hub.endpoint, cache_dir=cache)
        with hub.offline():
            offline = Retriever.from_pretrained("org/tiny", endpoint=hub.endpoint, cache_dir=cache)
        hub.clear_requests()
        with hub.failing(503):
            failing = Retriever.from_pretrained("org/tiny", endpoint=hub.endpoint, cache_dir=cache)
        # One request per file, each answered from the cache without a retry.
        assert [q.method for q in hub.requests] == ["HEAD", "HEAD", "HEAD"]
    expected = online.encode_text(["a man in a red coat"])
    assert torch.equal(offline.encode_text(["a man in a red coat"]), expected)
    assert torch.equal(failing.encode_text(["a man in a red coat"]), expected)


def test_local_files_only_names_the_cache_and_the_remedy(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with FakeHub() as hub:
        with pytest.raises(HubConnectionError) as info:
            Retriever.from_pretrained(
                "org/other", endpoint=hub.endpoint, cache_dir=cache, local_files_only=True
            )
        assert hub.requests == []
    assert str(info.value) == (
        "Retriever.from_pretrained: 'config.json' of 'org/other' (revision 'main') is not in "
        f"the Hub cache ({_cache_folder(cache, 'org/other')}) and local_files_only=True forbids "
        "downloading it; download it once without local_files_only (or `hf download "
        "org/other`), or pass a local folder holding the files"
    )


def test_hf_hub_offline_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "cache"
    with FakeHub() as hub:
        with pytest.raises(HubConnectionError) as info:
            load_clip("org/other", endpoint=hub.endpoint, cache_dir=cache)
        assert hub.requests == []
    message = str(info.value)
    assert message.startswith("load_clip: 'config.json' of 'org/other'")
    assert _cache_folder(cache, "org/other") in message
    assert message.endswith(
        "the HF_HUB_OFFLINE environment variable forbids downloading it; unset HF_HUB_OFFLINE, "
        "or download it first (`hf download org/other` where the network is allowed)"
    )


def test_the_cli_says_a_mistyped_folder_does_not_exist_without_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from textreid.cli import main

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "retriever-old").mkdir(parents=True)
    (tmp_path / "gallery").mkdir()
    code = main(["search", "runs/retriever", "--text", "a man", "--gallery", "gallery"])
    assert attempts == []
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no such folder 'runs/retriever' (looked for " in err
    assert f"{tmp_path / 'runs'} holds: retriever-old)" in err


def test_the_cli_stops_at_the_first_failed_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from textreid import hub as hub_module
    from textreid.cli import main

    (tmp_path / "gallery").mkdir()
    cache = tmp_path / "c"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    with FakeHub() as hub, hub.failing(503):
        options = hub_module.hub_options
        # The CLI has no --endpoint: point its default Hub at the fake one.
        monkeypatch.setattr(
            hub_module,
            "hub_options",
            lambda **kw: {**options(**kw), "endpoint": hub.endpoint},
        )
        start = time.perf_counter()
        code = main(
            ["search", "org/tiny", "--text", "a man", "--gallery", str(tmp_path / "gallery")]
        )
        assert time.perf_counter() - start < 5
        # huggingface_hub alone asks 6 times over ~23 s (5 retries with backoff).
        files = [(q.method, q.path) for q in hub.requests if "/resolve/" in q.path]
        assert files == [("HEAD", "/org/tiny/resolve/main/config.json")]
        endpoint = hub.endpoint
    assert code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # no retry lines, no traceback
    assert f"the hub at {endpoint} could not be reached (it answered HTTP 503)" in lines[0]
    assert str(cache / "models--org--tiny") in lines[0]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_access_says_to_log_in(status: int, tmp_path: Path) -> None:
    with FakeHub() as hub, hub.failing(status):
        with pytest.raises(
            PermissionError,
            match=rf"^Retriever\.from_pretrained: the hub refused access to 'org/private' "
            rf"\(HTTP {status}\); log in with `hf auth login` \(or pass token=\)",
        ):
            Retriever.from_pretrained("org/private", endpoint=hub.endpoint, cache_dir=tmp_path)
        assert len(hub.requests) == 1
