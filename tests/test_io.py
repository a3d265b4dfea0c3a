"""textreid._io: atomic writes (umask, stale temporary files), manifests, bounded reads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from textreid import _io
from textreid._io import (
    MANIFEST,
    FileDigest,
    atomic_path,
    atomic_write,
    parse_json_object,
    parse_manifest,
    publish_files,
    read_bounded,
    resolve_in_folder,
)

fcntl = pytest.importorskip("fcntl")  # flock locks: POSIX only


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_users_umask(tmp_path: Path, mask: int, mode: int) -> None:
    with _umask(mask):
        path = atomic_write(tmp_path / "out.bin", lambda f: f.write(b"x"))
        with atomic_path(tmp_path / "named.bin") as tmp:
            tmp.write_bytes(b"y")
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"z")
    assert path.stat().st_mode & 0o777 == mode
    assert (tmp_path / "named.bin").stat().st_mode & 0o777 == mode
    assert plain.stat().st_mode & 0o777 == mode  # the same as an ordinary write


def _temp_folder(folder: Path, target: str, size: int = 1000) -> Path:
    # What a killed atomic_path leaves: its folder, lock file and the partial output
    # (here as safetensors leaves it, under its own temporary name).
    temp = folder / f".{target}.a1b2c3d4.tmp"
    temp.mkdir()
    (temp / ".lock").write_bytes(b"")
    (temp / ".tmpAbC123").write_bytes(b"\0" * size)
    return temp


def test_the_next_write_removes_temporary_folders_of_killed_writers(tmp_path: Path) -> None:
    stale = [_temp_folder(tmp_path, "model.safetensors"), _temp_folder(tmp_path, "other.json")]
    keep = [tmp_path / ".hidden.tmp", tmp_path / "notes.a1b2c3d4.tmp", tmp_path / ".x.abcdefgh.tmp"]
    for p in keep:
        p.write_bytes(b"keep")
    creating = tmp_path / ".y.abcdefgh.tmp"
    creating.mkdir()  # a writer between mkdir and its lock file
    atomic_write(tmp_path / "out.bin", lambda f: f.write(b"x"))
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"keep" for p in keep)
    assert _names(tmp_path) == sorted([*(p.name for p in keep), creating.name, "out.bin"])


def test_a_live_writers_temporary_folder_is_kept(tmp_path: Path) -> None:
    live = _temp_folder(tmp_path, "big.bin")
    fd = os.open(live / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer, still writing
        atomic_write(tmp_path / "out.bin", lambda f: f.write(b"x"))
        assert live.exists()
        # The temporary folders of this process are never taken for stale ones either.
        with atomic_path(tmp_path / "a.bin") as a, atomic_path(tmp_path / "b.bin") as b:
            a.write_bytes(b"a")
            b.write_bytes(b"b")
            assert a.exists()
            assert b.exists()
    finally:
        os.close(fd)
    atomic_write(tmp_path / "out.bin", lambda f: f.write(b"x"))
    assert not live.exists()  # its writer is gone now
    assert _names(tmp_path) == ["a.bin", "b.bin", "out.bin"]


def test_a_write_killed_mid_way_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    # The writer imports _io.py alone (stdlib only), so this costs no torch import.
    script = f"""
import importlib.util, os, signal
spec = importlib.util.spec_from_file_location("_io", {str(Path(_io.__file__))!r})
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
with io.atomic_path({str(tmp_path / "weights.bin")!r}) as tmp:
    tmp.write_bytes(b"\\0" * 100_000)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".weights.bin.")
    assert (left / "weights.bin").stat().st_size == 100_000
    atomic_write(tmp_path / "weights.bin", lambda f: f.write(b"new"))
    assert _names(tmp_path) == ["weights.bin"]


def test_a_file_the_writer_replaced_still_gets_the_umask(tmp_path: Path) -> None:
    with _umask(0o022), atomic_path(tmp_path / "w.bin") as tmp:
        # A writer that renames its own 0o600 file over the path, as safetensors does.
        own = tmp.parent / ".own"
        fd = os.open(own, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        os.close(fd)
        os.replace(own, tmp)
    assert (tmp_path / "w.bin").stat().st_mode & 0o777 == 0o644
    assert _names(tmp_path) == ["w.bin"]


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def fail(f: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, fail)
    assert _names(tmp_path) == ["out.bin"]
    assert target.read_bytes() == b"old"


def test_publish_files_renames_the_manifest_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        order.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(_io.os, "replace", spy)
    publish_files(tmp_path, {"a.bin": lambda p: p.write_bytes(b"aa"), "b.json": lambda p: None})
    assert order[-1] == MANIFEST
    assert sorted(order[:-1]) == ["a.bin", "b.json"]
    manifest = parse_manifest((tmp_path / MANIFEST).read_bytes(), MANIFEST, "test")
    assert manifest == {"a.bin": FileDigest.of_bytes(b"aa"), "b.json": FileDigest.of_bytes(b"")}
    assert manifest["a.bin"].sha256 == (
        "961b6dd3ede3cb8ecbaacbd68de040cd78eb2ed5889130cceb4c49268ea4d506"
    )


def test_publish_files_fails_without_touching_the_folder(tmp_path: Path) -> None:
    publish_files(tmp_path, {"a.bin": lambda p: p.write_bytes(b"old a")})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        publish_files(tmp_path, {"a.bin": lambda p: p.write_bytes(b"new a"), "b.bin": fail})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"format_version": 2, "files": {}}', "format version 1"),
        ('{"format_version": 1, "files": {"a": {"size": -1, "sha256": "00"}}}', "lists 'a'"),
        ('{"format_version": 1, "files": {"a": {"size": true, "sha256": "x"}}}', "lists 'a'"),
        ("[1]", "must hold a JSON object, got list"),
    ],
)
def test_bad_manifests_are_refused(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_manifest(text.encode(), "m.json", "fn")


def test_read_bounded_caps_the_size(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"x" * 101)
    assert read_bounded(path, max_bytes=101, fn="fn") == b"x" * 101
    with pytest.raises(ValueError, match=r"fn: .*f\.json has 101 bytes, more than the 100"):
        read_bounded(path, max_bytes=100, fn="fn")


def test_read_bounded_refuses_devices_and_pipes_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(ValueError, match=r"pipe\.json is not a regular file"):
        read_bounded(fifo, max_bytes=100, fn="fn")
    with pytest.raises(ValueError, match="/dev/urandom is not a regular file"):
        read_bounded(Path("/dev/urandom"), max_bytes=100, fn="fn")
    with pytest.raises(ValueError, match="is not a regular file"):
        read_bounded(tmp_path, max_bytes=100, fn="fn")


def test_parse_json_object_turns_every_failure_into_a_value_error() -> None:
    assert parse_json_object(b'{"a": [1, 2]}', "s", "fn") == {"a": [1, 2]}
    with pytest.raises(ValueError, match="fn: s nests JSON too deeply"):
        parse_json_object(b"[" * 100_000 + b"]" * 100_000, "s", "fn")
    with pytest.raises(ValueError, match="fn: s is not valid JSON"):
        parse_json_object(b"\xff\xfe", "s", "fn")
    with pytest.raises(ValueError, match="fn: s is not valid JSON"):
        parse_json_object(b'{"a": ' + b"9" * 5000 + b"}", "s", "fn")
    with pytest.raises(ValueError, match="fn: s must hold a JSON object, got str"):
        parse_json_object(json.dumps("x").encode(), "s", "fn")


def test_resolve_in_folder_refuses_links_out_of_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "real.json").write_text("{}")
    (folder / "inside.json").symlink_to("sub/real.json")
    (tmp_path / "secret.json").write_text("{}")
    (folder / "outside.json").symlink_to("../secret.json")
    (folder / "dangling.json").symlink_to("sub/none.json")
    assert resolve_in_folder(folder, "inside.json", "fn") == (folder / "sub/real.json").resolve()
    assert resolve_in_folder(folder, "missing.json", "fn") is None
    assert resolve_in_folder(folder, "dangling.json", "fn") is None
    with pytest.raises(ValueError, match=r"fn: .*outside\.json is a symbolic link to .*secret"):
        resolve_in_folder(folder, "outside.json", "fn")
    with pytest.raises(ValueError, match="outside the folder"):
        resolve_in_folder(folder, "../secret.json", "fn")


def test_resolve_in_folder_follows_hugging_face_cache_links(tmp_path: Path) -> None:
    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "0123abcd").write_text("{}")
    snapshot = repo / "snapshots" / "c0ffee"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to("../../blobs/0123abcd")
    (snapshot / "other.json").symlink_to("../../../elsewhere.json")
    (tmp_path / "elsewhere.json").write_text("{}")
    assert resolve_in_folder(snapshot, "config.json", "fn") == (repo / "blobs/0123abcd").resolve()
    with pytest.raises(ValueError, match="outside the folder"):
        resolve_in_folder(snapshot, "other.json", "fn")
