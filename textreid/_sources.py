"""Hub resolution in one place: what a name points at, and fetching a file of a Hub repository.

:meth:`textreid.Retriever.from_pretrained` and :func:`textreid.models.load_clip` both accept
a local folder, ``"org/name"`` or ``"hf-hub:org/name"`` (``load_clip`` also a weights file);
both resolve the name and download through here, so they agree on what a repo id is, never
touch the network for a local path, and report a missing repository, revision or cached
file the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HUB_PREFIX", "Source", "hub_download", "hub_options", "is_repo_id", "resolve_source"]

HUB_PREFIX = "hf-hub:"
# The Hub's rule: "org/name", each part of letters, digits, "_", "." and "-"; a leading
# letter or digit keeps relative paths such as "./x/y" from reading as repo ids.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


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


def resolve_source(name_or_path: str | os.PathLike[str], fn: str, *, files: bool) -> Source:
    """Resolve a local folder, a local file (when ``files``), or a Hub repo id.

    ``"hf-hub:org/name"`` is always the Hub; otherwise an existing local path wins over a
    repo id of the same spelling, so a local folder never touches the network.

    Raises:
        ValueError: ``"hf-hub:"`` followed by something that is not ``"org/name"``.
        FileNotFoundError: neither an existing path nor a repo id.
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
    if is_repo_id(text):
        return Source(repo_id=text)
    if files:
        found = f"is not an existing file or folder (parent folder {path.parent.resolve()}), nor"
    else:
        found = "is neither an existing folder nor"
    raise FileNotFoundError(
        f"{fn}: {text!r} {found} a hub repo id ('org/name' or 'hf-hub:org/name'); check the path"
    )


def hub_download(
    repo_id: str, filename: str, hub: Mapping[str, Any], fn: str, *, required: bool
) -> Path | None:
    """Fetch ``filename`` of a Hub repository (or find it in the cache) and return its path.

    Args:
        repo_id: ``"org/name"``.
        filename: the file in the repository.
        hub: :func:`hub_options`.
        fn: the public function called, named in errors.
        required: raise when the file is absent (remotely, or from the cache when the network
            is not used); otherwise return ``None``.

    Raises:
        FileNotFoundError: an unknown repository or revision, or a required file that is
            absent; each message says what to do.
    """
    from huggingface_hub import errors, hf_hub_download

    revision = hub.get("revision") or "main"
    try:
        return Path(hf_hub_download(repo_id, filename, **hub))
    except errors.RepositoryNotFoundError as exc:
        raise FileNotFoundError(
            f"{fn}: repository {repo_id!r} was not found on the hub; check the name, or pass "
            "token= for a private repository"
        ) from exc
    except errors.RevisionNotFoundError as exc:
        raise FileNotFoundError(
            f"{fn}: repository {repo_id!r} has no revision {revision!r}; pass an existing "
            "branch, tag or commit as revision="
        ) from exc
    except errors.RemoteEntryNotFoundError as exc:
        if not required:
            return None
        raise FileNotFoundError(
            f"{fn}: repository {repo_id!r} has no file {filename!r} at revision {revision!r}; "
            "it is not a textreid retriever or CLIP repository"
        ) from exc
    except errors.LocalEntryNotFoundError as exc:
        if not required:
            return None
        raise FileNotFoundError(
            f"{fn}: {filename!r} of {repo_id!r} (revision {revision!r}) is not in the Hub "
            f"cache ({hub.get('cache_dir') or 'default cache'}) and the network is not used "
            "(local_files_only=True, HF_HUB_OFFLINE, or the hub is unreachable). Download it "
            "once online, or pass a local folder holding the files"
        ) from exc
