"""Files at the package boundary: atomic writes, unmixable multi-file saves, bounded reads.

Writes. :func:`atomic_path` hands out a file in a private temporary folder beside the target
(``.<name>.<8 random characters>.tmp/``). On a clean exit the file gets mode ``0o666`` less
the user's umask (as for a plain ``open(path, "w")``, even when the writer replaced it with a
file of its own), is ``fsync``-ed and renamed over the target, and the folder is
``fsync``-ed so the rename is durable; on any error the target is left as it was. The
temporary folder goes in both cases. Its writer holds an exclusive ``flock`` on a lock file
in it for the folder's whole life, so the next write beside it can tell the folders of killed
writers (no lock holder), with whatever they wrote, from live ones and removes them.

Multi-file saves. :func:`publish_files` stages every file first, then renames them into
place with a manifest (:data:`MANIFEST`: each file's size and SHA-256) renamed last. A reader
that checks what it reads against the manifest therefore never accepts files from two saves,
whatever the interleaving. Writers into one folder hold :func:`folder_lock` (an exclusive
``flock`` on :data:`LOCK_NAME`) so their saves happen one after the other; readers may hold
it shared so that they do not even have to retry.

Reads. :func:`read_bounded` reads a regular file of at most a given size and
:func:`parse_json_object` turns bytes into a JSON object with every failure a ``ValueError``;
:func:`resolve_in_folder` refuses symbolic links out of a model folder.

Without ``fcntl`` (Windows) there are no ``flock`` locks: saves into one folder are
serialised within a process only, temporary files of killed writers are left in place (a
live one cannot be told apart), and readers rely on the manifest alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__: list[str] = []

MANIFEST = "textreid_manifest.json"
"""The file that lists, for a multi-file save, every file's size and SHA-256."""
LOCK_NAME = ".textreid.lock"
"""The empty file whose ``flock`` serialises the saves into one folder."""
MAX_CONFIG_BYTES = 1 << 20
"""Largest JSON config or manifest read (textreid's and CLIP's are a few KiB)."""
MANIFEST_FORMAT_VERSION = 1

_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_TEMP_LOCK = ".lock"
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

# Temporary files this process is writing. POSIX record locks, which NFS uses to emulate
# flock, belong to the process rather than to the open file, so our own cleaner could
# otherwise take the lock of a live temporary file of another thread.
_live: set[str] = set()
_live_guard = threading.Lock()
# One lock per folder serialises this process's threads even where flock is per process.
_folder_guards: dict[str, threading.Lock] = {}


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


@dataclass
class _Temp:
    """The private folder of one atomic write: the file to write and the writer's lock."""

    folder: Path
    file: Path
    mode: int
    fd: int | None


def _create_temp(target: Path) -> _Temp:
    """Create ``.<name>.<random>.tmp/`` beside ``target``, holding an empty file to write
    and a lock file locked for the folder's whole life."""
    while True:
        name = "".join(secrets.choice(_TEMP_CHARS) for _ in range(8))
        folder = target.parent / f".{target.name}.{name}.tmp"
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue
        with _live_guard:
            _live.add(str(folder))
        fd = os.open(folder / _TEMP_LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        # Created like any new file, so its mode is 0o666 less the umask: the mode to give
        # the result even when the writer replaced the file (safetensors makes it 0o600).
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if fcntl is None:
            os.close(fd)  # Windows cannot remove a folder while a file in it is open
            fd_held = None
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A cleaner may have locked and removed the folder between the lock file's
            # creation and our lock; after our lock it no longer can.
            if not _same_file(folder / _TEMP_LOCK, fd):
                os.close(fd)
                with _live_guard:
                    _live.discard(str(folder))
                continue
            fd_held = fd
        file = folder / target.name
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666))
        return _Temp(folder, file, mode, fd_held)


def _remove_stale_temps(folder: Path) -> None:
    """Remove the temporary folders of writers that died (nobody holds their lock)."""
    if fcntl is None:
        return
    try:
        entries = [
            e
            for e in os.scandir(folder)
            if _TEMP_NAME.match(e.name) and e.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return
    for entry in entries:
        with _live_guard:
            if entry.path in _live:
                continue
        lock = Path(entry.path) / _TEMP_LOCK
        try:
            fd = os.open(lock, os.O_RDWR | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
        except OSError:
            continue  # no lock file yet: a writer is creating it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(lock, fd):
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue
        finally:
            os.close(fd)


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[_Temp]:
    """A temporary folder for ``target``, removed on exit (after any rename out of it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _create_temp(target)
    try:
        _remove_stale_temps(target.parent)
        yield temp
    finally:
        # Removed before the lock is released, so no cleaner ever sees it unlocked.
        shutil.rmtree(temp.folder, ignore_errors=True)
        if temp.fd is not None:
            os.close(temp.fd)
        with _live_guard:
            _live.discard(str(temp.folder))


def _finish(temp: _Temp) -> None:
    """Give the written file its mode and make its bytes durable, before any rename."""
    with open(temp.file, "rb+") as f:
        os.chmod(temp.file, temp.mode)
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on a clean exit the file there replaces ``path``.

    The temporary file exists (empty) when the path is yielded, alone in a private folder
    beside ``path``; writers may write it, or replace it as ``safetensors`` does. The result
    gets mode ``0o666`` less the umask, like any new file. Temporary folders left beside
    ``path`` by killed writers are removed first. For writers that want a file name;
    :func:`atomic_write` for file objects.
    """
    target = Path(path)
    with _staged(target) as temp:
        yield temp.file
        _finish(temp)
        os.replace(temp.file, target)
    _fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


@contextlib.contextmanager
def folder_lock(folder: Path, *, shared: bool = False) -> Iterator[bool]:
    """Hold the lock of ``folder``: exclusive for a writer, shared for a reader.

    A writer creates :data:`LOCK_NAME` (the folder must exist). A reader only opens an
    existing lock file and reads without a lock where there is none (a folder never saved
    by this version, or a read-only copy). A file system without ``flock`` support leaves
    the folder unlocked; the manifest still keeps readers from mixing saves.

    Yields:
        Whether the ``flock`` is held (else no writer that locks can be excluded).
    """
    guard = contextlib.nullcontext() if shared else _folder_guard(folder)
    with guard:
        fd: int | None = None
        if fcntl is not None:
            try:
                if shared:
                    fd = os.open(folder / LOCK_NAME, os.O_RDONLY | _O_NONBLOCK)
                else:
                    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | _O_NONBLOCK, 0o666)
            except (FileNotFoundError, PermissionError):
                if not shared:
                    raise
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                except OSError:
                    os.close(fd)
                    fd = None
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)


def _folder_guard(folder: Path) -> threading.Lock:
    key = os.path.realpath(folder)
    with _live_guard:
        return _folder_guards.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class FileDigest:
    """Size and SHA-256 of one file of a multi-file save."""

    size: int
    sha256: str

    @classmethod
    def of_bytes(cls, data: bytes) -> FileDigest:
        return cls(len(data), hashlib.sha256(data).hexdigest())

    @classmethod
    def of_file(cls, f: IO[bytes]) -> FileDigest:
        """Digest of an open file, read from its start to its end."""
        f.seek(0)
        digest, size = hashlib.sha256(), 0
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        return cls(size, digest.hexdigest())


def publish_files(folder: Path, writers: Mapping[str, Callable[[Path], object]]) -> None:
    """Write several files into ``folder`` so that a reader checking :data:`MANIFEST` never
    mixes them with another save's.

    Every ``writers[name](tmp)`` writes its file to a temporary path; only when all are
    written and durable are they renamed into place, the manifest last. A failure before the
    renames (a full disk, a failing writer) leaves the folder as it was. Call it holding
    :func:`folder_lock`.
    """
    with contextlib.ExitStack() as stack:
        staged: dict[str, _Temp] = {}
        files: dict[str, dict[str, Any]] = {}
        for name, write in writers.items():
            temp = staged[name] = stack.enter_context(_staged(folder / name))
            write(temp.file)
            _finish(temp)
            with open(temp.file, "rb") as f:
                digest = FileDigest.of_file(f)
            files[name] = {"size": digest.size, "sha256": digest.sha256}
        manifest = {"format_version": MANIFEST_FORMAT_VERSION, "files": files}
        staged[MANIFEST] = temp = stack.enter_context(_staged(folder / MANIFEST))
        temp.file.write_bytes(json.dumps(manifest, indent=2).encode() + b"\n")
        _finish(temp)
        for name, temp in staged.items():  # the manifest last
            os.replace(temp.file, folder / name)
    _fsync_dir(folder)


def parse_manifest(data: bytes, source: str, fn: str) -> dict[str, FileDigest]:
    """The ``name -> FileDigest`` map of a manifest's bytes.

    Raises:
        ValueError: The manifest is not one written by :func:`publish_files`.
    """
    raw = parse_json_object(data, source, fn)
    files = raw.get("files")
    version = raw.get("format_version")
    if version != MANIFEST_FORMAT_VERSION or not isinstance(files, dict):
        raise ValueError(
            f"{fn}: {source} is not a textreid manifest of format version "
            f"{MANIFEST_FORMAT_VERSION} (format_version {version!r}); it is corrupt or from a "
            "newer textreid"
        )
    out: dict[str, FileDigest] = {}
    for name, entry in files.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or size < 0
            or not isinstance(sha, str)
            or not re.fullmatch(r"[0-9a-f]{64}", sha)
        ):
            raise ValueError(
                f"{fn}: {source} lists {name!r} without a valid size and sha256 "
                f"(got {entry!r}); the manifest is corrupt"
            )
        out[name] = FileDigest(size, sha)
    return out


def open_regular(path: Path, fn: str) -> IO[bytes]:
    """Open ``path`` for reading after checking it is a regular file (not a device or pipe).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a regular file.
    """
    # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_BINARY)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{fn}: {path} is not a regular file; refusing to read it")
    return os.fdopen(fd, "rb")


def read_bounded(path: Path, *, max_bytes: int, fn: str) -> bytes:
    """The bytes of the regular file ``path``, refused when longer than ``max_bytes``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a regular file or is too large.
    """
    with open_regular(path, fn) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(max_bytes + 1) if size <= max_bytes else b""
        if size > max_bytes or len(data) > max_bytes:
            raise ValueError(
                f"{fn}: {path} has {max(size, len(data))} bytes, more than the {max_bytes} "
                "allowed for this file; it is corrupt or not the file expected"
            )
    return data


def parse_json_object(data: bytes, source: str, fn: str) -> dict[str, Any]:
    """Parse ``data`` as a JSON object; every failure is a ``ValueError`` naming ``source``."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{fn}: {source} is not valid JSON ({exc}); the file is corrupt") from exc
    except RecursionError:
        raise ValueError(
            f"{fn}: {source} nests JSON too deeply to be a config; the file is corrupt"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{fn}: {source} must hold a JSON object, got {type(value).__name__}")
    return value


def read_json_object(path: Path, *, max_bytes: int, fn: str) -> dict[str, Any]:
    """:func:`read_bounded` then :func:`parse_json_object`."""
    return parse_json_object(read_bounded(path, max_bytes=max_bytes, fn=fn), str(path), fn)


def resolve_in_folder(folder: Path, name: str, fn: str) -> Path | None:
    """The real path of ``folder / name``, ``None`` when it does not exist.

    A symbolic link may point anywhere inside ``folder``; out of it only from a Hugging Face
    cache snapshot (``.../snapshots/<commit>``) into that cache's ``blobs`` folder.

    Raises:
        ValueError: ``folder / name`` is a symbolic link to a path outside the folder.
    """
    path = folder / name
    if not os.path.lexists(path):
        return None
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(folder))
    allowed = [root]
    if root.parent.name == "snapshots":
        allowed.append(root.parent.parent / "blobs")
    if not any(real.is_relative_to(r) for r in allowed):
        raise ValueError(
            f"{fn}: {path} is a symbolic link to {real}, outside the folder {folder}; "
            "refusing to read it. Copy the file into the folder instead"
        )
    return real if real.exists() else None
