"""Test utilities shipped with textreid so users can test their own code offline.

:class:`FakeHub` is a loopback stand-in for the Hugging Face Hub: a real HTTP server on
``127.0.0.1`` answering the two requests ``huggingface_hub.hf_hub_download`` makes
(``HEAD`` and ``GET /{repo}/resolve/{revision}/{file}``) with the headers the client needs
(``X-Repo-Commit``, ``ETag``) and Hub-style 404s. A real socket, not a mocked HTTP client,
so it keeps working when ``huggingface_hub`` changes its HTTP stack. ``hub.offline()`` refuses
connections for a block (an unreachable Hub) and ``hub.failing(503)`` answers every request
with an error status (a Hub that is down), to test what a user sees then.

Example::

    from textreid.testing import FakeHub

    with FakeHub() as hub:
        hub.add_repo("org/model", {"config.json": b"{}"})
        path = hf_hub_download("org/model", "config.json", endpoint=hub.endpoint,
                               cache_dir=tmp_path)
        assert [r.method for r in hub.requests] == ["HEAD", "GET"]

Uses only the standard library (no pytest import), so it is safe to import anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

__all__ = ["FakeHub", "FakeHubApi", "RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake hub received."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Repo:
    # commit hash -> {filename: bytes}; branches map names to commit hashes.
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    private: bool = False


def _commit_hash(repo_id: str, files: dict[str, bytes], parent: str | None) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(repo_id.encode())
    h.update((parent or "").encode())
    for name in sorted(files):
        h.update(name.encode())
        h.update(hashlib.sha256(files[name]).digest())
    return h.hexdigest()


class FakeHub:
    """A loopback Hugging Face Hub for tests; use as a context manager.

    Args:
        host: interface to bind; only loopback addresses are accepted.

    Attributes:
        endpoint: base URL to pass as ``endpoint=`` to textreid / ``huggingface_hub`` calls.
        requests: every request received, in order (method, path, headers).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError(f"FakeHub: host must be a loopback address, got {host!r}")
        self._host = host
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._failure: int | None = None

    # -- repository content -------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | str],
        *,
        revision: str = "main",
        private: bool = False,
    ) -> str:
        """Create or update ``repo_id`` with ``files`` as a new commit on branch ``revision``.

        Files of the branch's previous commit are kept unless overwritten. Returns the new
        40-hex commit hash (usable as a pinned ``revision=``).
        """
        data = {k: (v.encode() if isinstance(v, str) else bytes(v)) for k, v in files.items()}
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo(private=private))
            parent = repo.branches.get(revision)
            merged = dict(repo.commits[parent]) if parent else {}
            merged.update(data)
            commit = _commit_hash(repo_id, merged, parent)
            repo.commits[commit] = merged
            repo.branches[revision] = commit
            return commit

    def remove_file(self, repo_id: str, filename: str, *, revision: str = "main") -> str:
        """Delete ``filename`` from the branch head (a new commit); returns the commit hash."""
        with self._lock:
            repo = self._repos[repo_id]
            parent = repo.branches[revision]
            files = {k: v for k, v in repo.commits[parent].items() if k != filename}
            commit = _commit_hash(repo_id, files, parent)
            repo.commits[commit] = files
            repo.branches[revision] = commit
            return commit

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (branch name or commit hash)."""
        with self._lock:
            repo = self._repos[repo_id]
            commit = repo.branches.get(revision, revision)
            return dict(repo.commits[commit])

    def api(self) -> FakeHubApi:
        """A recording stand-in for ``huggingface_hub.HfApi`` that writes into this hub."""
        return FakeHubApi(self)

    def _resolve(self, repo_id: str, revision: str) -> tuple[str | None, dict[str, bytes] | None]:
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                return None, None
            commit = repo.branches.get(revision, revision)
            files = repo.commits.get(commit)
            return (commit, files) if files is not None else (None, {})

    # -- server ---------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if not self._port:
            raise RuntimeError("FakeHub: not started; use it as a context manager")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    def start(self) -> FakeHub:
        handler = _make_handler(self)
        # The port of a previous start is reused, so an endpoint stays valid across offline().
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._close()
        self._port = 0

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        """Refuse connections inside the block, as an unreachable Hub does; the same
        :attr:`endpoint` answers again after it."""
        if self._server is None:
            raise RuntimeError("FakeHub.offline: not started; use it as a context manager")
        self._close()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def failing(self, status: int = 503) -> Iterator[None]:
        """Answer every request inside the block with HTTP ``status`` (recorded in
        :attr:`requests`), as a Hub that is down or rate-limiting does."""
        if not 400 <= status <= 599:
            raise ValueError(
                f"FakeHub.failing: status must be an HTTP error (4xx/5xx), got {status}"
            )
        self._failure = status
        try:
            yield
        finally:
            self._failure = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers))


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return  # keep test output clean

        def _answer(self, send_body: bool) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            hub._record(self.command, path, {k.lower(): v for k, v in self.headers.items()})
            if hub._failure is not None:
                self._error(hub._failure, "", "the fake hub is failing", None, send_body)
                return
            parts = path.strip("/").split("/")
            # Accept both "{org}/{name}/resolve/..." and "models/{org}/{name}/resolve/...".
            if parts and parts[0] == "models":
                parts = parts[1:]
            if "resolve" not in parts or parts.index("resolve") + 2 > len(parts):
                self._error(404, "RepoNotFound", "unknown route", None, send_body)
                return
            i = parts.index("resolve")
            repo_id = "/".join(parts[:i])
            revision = parts[i + 1]
            filename = "/".join(parts[i + 2 :])
            commit, files = hub._resolve(repo_id, revision)
            if files is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found", None, send_body)
                return
            if commit is None:
                msg = f"Invalid rev id: {revision}"
                self._error(404, "RevisionNotFound", msg, None, send_body)
                return
            if filename not in files:
                msg = f"Entry not found: {filename}"
                self._error(404, "EntryNotFound", msg, commit, send_body)
                return
            body = files[filename]
            etag = hashlib.sha256(body).hexdigest()
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _error(
            self, status: int, code: str, message: str, commit: str | None, send_body: bool
        ) -> None:
            body = message.encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit is not None:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

    return Handler


class FakeHubApi:
    """Records ``create_repo`` / ``upload_folder`` calls and applies them to a :class:`FakeHub`.

    Pass it as ``api=`` to :meth:`textreid.Retriever.push_to_hub`; inspect ``calls`` after.
    """

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.calls: list[tuple[str, dict[str, object]]] = []

    def create_repo(
        self,
        repo_id: str,
        *,
        private: bool = False,
        exist_ok: bool = False,
        token: str | None = None,
        repo_type: str | None = None,
    ) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, "private": private}))
        if repo_id in self.hub._repos and not exist_ok:
            raise ValueError(f"FakeHubApi.create_repo: {repo_id} already exists")
        with self.hub._lock:
            self.hub._repos.setdefault(repo_id, _Repo(private=private))
        return f"{self.hub.endpoint}/{repo_id}"

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | os.PathLike[str],
        commit_message: str | None = None,
        revision: str | None = None,
        token: str | None = None,
        repo_type: str | None = None,
    ) -> str:
        root = Path(folder_path)
        files = {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }
        self.calls.append(
            (
                "upload_folder",
                {"repo_id": repo_id, "files": sorted(files), "commit_message": commit_message},
            )
        )
        if repo_id not in self.hub._repos:
            raise ValueError(f"FakeHubApi.upload_folder: repository {repo_id} does not exist")
        return self.hub.add_repo(repo_id, dict(files), revision=revision or "main")
