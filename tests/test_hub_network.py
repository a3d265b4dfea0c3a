"""What a user sees when the Hub cannot be used: an unreachable or failing Hub, offline
settings, and files missing from the cache (the loopback FakeHub stands in for the Hub)."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub
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
