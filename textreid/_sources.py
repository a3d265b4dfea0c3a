"""Hub resolution in one place: what a name points at, and fetching the files of a Hub repository.

:meth:`textreid.Retriever.from_pretrained` and :func:`textreid.models.load_clip` both accept
a local folder, ``"org/name"`` or ``"hf-hub:org/name"`` (``load_clip`` also a weights file);
both resolve the name and download through here, so they agree on what a repo id is, tell a
mistyped local path from a Hub id before any network use, and report a missing repository,
revision or file, an unreachable Hub and an uncached file the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HUB_PREFIX",
    "HubConnectionError",
    "HubRepo",
    "Source",
    "hub_options",
    "is_repo_id",
    "resolve_source",
]

HUB_PREFIX = "hf-hub:"
# The Hub's rule: "org/name", each part of letters, digits, "_", "." and "-"; a leading
# letter or digit keeps relative paths such as "./x/y" from reading as repo ids.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Endings that name a file, never a model repository ("Qwen2.5-7B" has a dot but no such ending).
_FILE_SUFFIXES = frozenset(
    {".bin", ".ckpt", ".gz", ".json", ".npz", ".onnx", ".pkl", ".pt", ".pth", ".safetensors"}
    | {".tar", ".toml", ".txt", ".zip"}
)
_PATH_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")
# Entries of a near folder named in a local-path error.
_LISTED = 8


class HubConnectionError(ConnectionError):
    """A file of a Hub repository could not be fetched: the Hub was unreachable, or the
    network was not to be used (``local_files_only=True``, ``HF_HUB_OFFLINE``), and the
    file is not in the Hub cache. The message names the cache folder and the remedy."""


def is_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hub repo id ``"org/name"``."""
    return _REPO_ID.match(text) is not None


def hub_options(
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    endpoint: str | None,
    token: str | bool | None,
) -> dict[str, Any]:
    """The keyword arguments passed through to ``huggingface_hub.hf_hub_download``."""
    return {
        "revision": revision,
        "cache_dir": os.fspath(cache_dir) if cache_dir is not None else None,
        "local_files_only": local_files_only,
        "endpoint": endpoint,
        "token": token,
    }


@dataclass(frozen=True)
class Source:
    """A resolved name: exactly one of ``folder``, ``file`` or ``repo_id`` is set."""

    folder: Path | None = None
    file: Path | None = None
    repo_id: str | None = None


def _path_like(text: str) -> str | None:
    """Why ``text`` (naming nothing that exists) must be a local path, or ``None``."""
    if text.startswith(_PATH_PREFIXES) or text in (".", ".."):
        return "it starts like a path"
    if "\\" in text or (os.sep != "/" and os.sep in text):
        return "it holds a path separator"
    if text.count("/") > 1 or text.endswith("/"):
        return "it has more slashes than owner/name"
    if Path(text).suffix.lower() in _FILE_SUFFIXES:
        return "it ends with a file extension"
    head = text.split("/", 1)[0]
    if "/" in text and Path(head).expanduser().is_dir():
        return f"{head!r} is a local folder (write {HUB_PREFIX}{text} for the Hub)"
    return None


def _missing_path(text: str, path: Path, fn: str, files: bool, why: str | None) -> str:
    if path.is_file():
        return (
            f"{fn}: {text!r} is a file ({path.absolute()}), not a folder; pass the folder "
            "that holds the saved files"
        )
    what = "file or folder" if files else "folder"
    message = f"{fn}: no such {what} {text!r} (looked for {path.absolute()}"
    parent = path.absolute().parent
    if parent.is_dir():
        names = sorted(p.name for p in parent.iterdir() if not p.name.startswith("."))
        shown = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
        message += f"; {parent} holds: {shown or 'nothing'}"
    message += ")"
    if why is not None:
        message += f"; taken as a local path because {why}"
    return (
        message + f"; a Hub id has the form owner/name (or {HUB_PREFIX}owner/name). Check the path"
    )


def resolve_source(name_or_path: str | os.PathLike[str], fn: str, *, files: bool) -> Source:
    """Resolve a local folder, a local file (when ``files``), or a Hub repo id, without
    touching the network.

    ``"hf-hub:org/name"`` is always the Hub. Otherwise an existing local path wins over a
    repo id of the same spelling, and a name that looks like a path (starts with ``./``,
    ``../``, ``/`` or ``~``, has a backslash or more than one slash, ends with a file
    extension such as ``.safetensors``, or whose first part is an existing local folder) is
    a local path even when it does not exist.

    Raises:
        ValueError: ``"hf-hub:"`` followed by something that is not ``"org/name"``.
        FileNotFoundError: a local path that does not exist, or a name that is neither an
            existing path nor a repo id; the message names the path looked for.
    """
    text = os.fspath(name_or_path)
    if text.startswith(HUB_PREFIX):
        repo_id = text[len(HUB_PREFIX) :]
        if not is_repo_id(repo_id):
            raise ValueError(f"{fn}: {repo_id!r} is not a valid hub repo id 'org/name'")
        return Source(repo_id=repo_id)
    path = Path(text).expanduser()
    if path.is_dir():
        return Source(folder=path)
    if files and path.is_file():
        return Source(file=path)
    why = "it names a file" if path.exists() else _path_like(text)
    if why is None and is_repo_id(text):
        return Source(repo_id=text)
    raise FileNotFoundError(_missing_path(text, path, fn, files, why))


class HubRepo:
    """The files of one Hub repository for one load, fetched with ``hf_hub_download``.

    The first file fetched over the network is preceded by one request for its metadata
    without retries: when the Hub cannot be reached (refused, unresolved, timed out, a 5xx
    or 429 answer), the rest of the load uses the Hub cache only, and a file missing there
    raises at once, instead of ``huggingface_hub`` retrying each file for about 25 s.

    Args:
        repo_id: ``"org/name"``.
        hub: :func:`hub_options`.
        fn: the public function called, named in errors.
    """

    def __init__(self, repo_id: str, hub: Mapping[str, Any], fn: str) -> None:
        self.repo_id = repo_id
        self.hub = dict(hub)
        self.fn = fn
        self._probed = False
        self._unreachable: str | None = None
        self._denied: int | None = None
        self._cache_hits = 0

    @property
    def unreachable(self) -> bool:
        """Whether this load found the Hub unreachable (it then reads the cache only)."""
        return self._unreachable is not None

    @property
    def revision(self) -> str:
        return self.hub.get("revision") or "main"

    def cache_folder(self) -> Path:
        """Where the Hub cache keeps this repository's files."""
        from huggingface_hub import constants

        root = self.hub.get("cache_dir") or constants.HF_HUB_CACHE
        return Path(root) / ("models--" + self.repo_id.replace("/", "--"))

    def _endpoint(self) -> str:
        from huggingface_hub import constants

        return str(self.hub.get("endpoint") or constants.ENDPOINT)

    def _probe(self, filename: str) -> None:
        from huggingface_hub import errors, get_hf_file_metadata, hf_hub_url

        self._probed = True
        url = hf_hub_url(
            self.repo_id, filename, revision=self.revision, endpoint=self.hub.get("endpoint")
        )
        try:
            get_hf_file_metadata(url, token=self.hub.get("token"))
        except errors.HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status is not None and (status >= 500 or status in (408, 429)):
                self._unreachable = f"it answered HTTP {status}"
            elif status in (401, 403):
                self._denied = status
            # Other answers (404) come again, without retries, from hf_hub_download,
            # which turns them into its error types.
        except Exception as exc:  # any transport failure: refused, DNS, timeout, TLS, proxy
            self._unreachable = f"{type(exc).__name__}: {exc}"

    def _offline_reason(self) -> str | None:
        from huggingface_hub import constants

        if self.hub.get("local_files_only"):
            return "local_files_only"
        if getattr(constants, "HF_HUB_OFFLINE", False):
            return "HF_HUB_OFFLINE"
        return None

    def get(self, filename: str, *, required: bool) -> Path | None:
        """Fetch ``filename`` (or find it in the cache) and return its local path.

        Args:
            filename: the file in the repository.
            required: raise when the file is absent; otherwise return ``None``.

        Raises:
            FileNotFoundError: an unknown repository or revision, or a required file that
                the Hub does not have; each message says what to do.
            PermissionError: a gated repository, or access refused (HTTP 401/403).
            HubConnectionError: the Hub is unreachable or the network is not to be used,
                and the file is not cached (for an optional file: nothing of this
                repository is cached either).
        """
        from huggingface_hub import errors, hf_hub_download

        offline = self._offline_reason()
        # A cached file needs no probe: when the Hub is unreachable huggingface_hub falls
        # back to it after one failed request, and retries only for files it lacks.
        if offline is None and not self._probed and not isinstance(self._cached(filename), str):
            self._probe(filename)
        if self._denied is not None:
            raise self._access_denied(self._denied)
        local_only = offline is not None or self._unreachable is not None
        options = {**self.hub, "local_files_only": local_only}
        try:
            path = Path(hf_hub_download(self.repo_id, filename, **options))
        except errors.GatedRepoError as exc:
            raise PermissionError(
                f"{self.fn}: repository {self.repo_id!r} is gated; accept its conditions on its "
                "Hub page, then log in with `hf auth login` (or pass token=)"
            ) from exc
        except errors.RepositoryNotFoundError as exc:
            raise FileNotFoundError(
                f"{self.fn}: repository {self.repo_id!r} was not found on the hub "
                f"({self._endpoint()}), and there is no local folder "
                f"{Path(self.repo_id).absolute()}; check the id, or for a private repository "
                "log in with `hf auth login` (or pass token=)"
            ) from exc
        except errors.RevisionNotFoundError as exc:
            raise FileNotFoundError(
                f"{self.fn}: repository {self.repo_id!r} has no revision {self.revision!r}; "
                "pass an existing branch, tag or commit as revision="
            ) from exc
        except errors.RemoteEntryNotFoundError as exc:
            if not required:
                return None
            raise FileNotFoundError(
                f"{self.fn}: repository {self.repo_id!r} has no file {filename!r} at revision "
                f"{self.revision!r}; it is not a textreid retriever or CLIP repository"
            ) from exc
        except errors.HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status not in (401, 403):
                raise
            raise self._access_denied(status) from exc
        except errors.LocalEntryNotFoundError as exc:
            if not required and self._known_absent(filename):
                return None
            cause = self._unreachable or str(exc)
            raise HubConnectionError(self._not_cached(filename, offline, cause)) from exc
        self._cache_hits += 1
        return path

    def _access_denied(self, status: int) -> PermissionError:
        return PermissionError(
            f"{self.fn}: the hub refused access to {self.repo_id!r} (HTTP {status}); log in "
            "with `hf auth login` (or pass token=) with an account that may read it"
        )

    def _cached(self, filename: str) -> object:
        """``try_to_load_from_cache``: a path (str) when cached, ``None`` when not, another
        object when the cache records the file as absent from the revision."""
        from huggingface_hub import try_to_load_from_cache

        return try_to_load_from_cache(
            self.repo_id, filename, cache_dir=self.hub.get("cache_dir"), revision=self.revision
        )

    def _known_absent(self, filename: str) -> bool:
        """Whether the cache records ``filename`` as absent, or the load has found other
        files of the repository there (so the cache holds the revision, without this
        optional file)."""
        found = self._cached(filename)
        return self._cache_hits > 0 or (found is not None and not isinstance(found, str))

    def _not_cached(self, filename: str, offline: str | None, cause: str) -> str:
        what = (
            f"{self.fn}: {filename!r} of {self.repo_id!r} (revision {self.revision!r}) is not "
            f"in the Hub cache ({self.cache_folder()})"
        )
        if offline == "local_files_only":
            return (
                f"{what} and local_files_only=True forbids downloading it; download it once "
                f"without local_files_only (or `hf download {self.repo_id}`), or pass a local "
                "folder holding the files"
            )
        if offline == "HF_HUB_OFFLINE":
            return (
                f"{what} and the HF_HUB_OFFLINE environment variable forbids downloading it; "
                f"unset HF_HUB_OFFLINE, or download it first (`hf download {self.repo_id}` "
                "where the network is allowed)"
            )
        return (
            f"{what} and the hub at {self._endpoint()} could not be reached "
            f"({cause}); check your network connection (and proxy settings), or "
            "pass a local folder holding the files"
        )
