"""Index a folder of images (or a list of image files) into a sharded gallery index on disk.

The function behind ``textreid index``::

    from textreid.indexing import index_folder
    index_folder("hf-hub:user/irra-cuhk", "/data/gallery", "gallery-index")

It writes the index shard by shard (:meth:`textreid.Retriever.index_images` with ``out=``),
so a crash or a Ctrl-C loses at most the shard being encoded, and running the same command
again resumes. Open the result with :meth:`GalleryIndex.load
<textreid.retrieval.GalleryIndex.load>`, or one part per process with
:meth:`GalleryIndex.load_shard <textreid.retrieval.GalleryIndex.load_shard>` and search it
with :func:`~textreid.retrieval.sharded_topk_search`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from textreid.hub import Retriever

__all__ = ["index_folder"]


def _list_file(path: Path, fn: str) -> list[str]:
    """The image paths of a list file: one per line, blank lines skipped, relative paths
    taken from the list's folder."""
    out = []
    with open(path, encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, 1):
                name = line.strip()
                if not name:
                    continue
                if "\0" in name:
                    raise ValueError(f"{fn}: line {number} of {path} holds a NUL character")
                p = Path(name)
                out.append(os.fspath(p if p.is_absolute() else path.parent / p))
        except UnicodeDecodeError:
            raise ValueError(
                f"{fn}: {path} is not a UTF-8 text file of image paths (one per line); pass "
                "a folder of images or such a list"
            ) from None
    if not out:
        raise ValueError(f"{fn}: {path} lists no image paths (one per line expected)")
    return out


def index_folder(
    model: str,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    shard_size: int = 100_000,
    batch_size: int = 64,
    device: str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Encode every image of a folder, a list file or a list of paths into a sharded index.

    Args:
        model: what :meth:`textreid.Retriever.from_pretrained` loads (a folder, a hub repo).
        images: a folder (every image file in it, recursively, sorted), a text file with one
            image path per line (relative paths are taken from the file's folder), or a
            sequence of paths.
        out: the index folder (created).
        shard_size: images per shard file; one shard is encoded in memory at a time.
        batch_size: images per forward pass.
        device: where the model runs (default: CUDA when available, else CPU, as
            :meth:`~textreid.Retriever.from_pretrained`).
        resume: keep the shards that an interrupted run with the same images, model and
            settings wrote; ``False`` starts over.
        progress: report progress: a bar on a terminal, else a line every 30 seconds.

    Returns:
        The index folder.

    Raises:
        FileNotFoundError: ``images`` does not exist, or an image is missing.
        ValueError: an empty folder or list, a list that is not UTF-8 text or holds a NUL
            character, a bad
            ``shard_size`` or ``batch_size``, an ``out`` folder holding a partial index of
            other images or settings with ``resume=True``; and the errors of
            :meth:`~textreid.Retriever.from_pretrained` and
            :meth:`~textreid.Retriever.index_images`.
    """
    fn = "index_folder"
    source: str | os.PathLike[str] | list[str]
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if not path.exists():
            raise FileNotFoundError(f"{fn}: {path} does not exist (a folder or a list file)")
        source = images if path.is_dir() else _list_file(path, fn)
    else:
        source = [os.fspath(p) for p in images]
        if not source:
            raise ValueError(f"{fn}: images is an empty list")
    retriever = Retriever.from_pretrained(model, device=device)
    return retriever.index_images(
        source,
        out=out,
        shard_size=shard_size,
        batch_size=batch_size,
        resume=resume,
        progress=progress,
    )
