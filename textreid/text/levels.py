"""IVT's text levels: the phrase- and word-level texts drawn from a caption during training."""

from __future__ import annotations

import random
from collections.abc import Mapping

__all__ = ["phrase_level_text", "word_level_text"]


def _clauses(caption: str, strip_brackets: bool) -> list[str]:
    """IVT's clause splitter: per sentence, the longest comma chunk and the re-joined rest."""
    text = caption.strip(".")
    if strip_brackets:
        text = text.strip("[").strip("]")
    result: list[str] = []
    for sentence in text.split("."):
        chunks = sentence.split(",")
        longest = max(range(len(chunks)), key=lambda k: (len(chunks[k]), -k))
        rest = (",".join(chunks[:longest]) + "," + ",".join(chunks[longest + 1 :])).strip(",")
        result += [c for c in (chunks[longest], rest) if len(c) > 5]
    return [c.strip(" ") for c in result if len(c) > 0]


def phrase_level_text(caption: str, rng: random.Random) -> str:
    """A phrase-level text of a caption, as IVT's training loop draws it.

    The caption is stripped of ``.`` then ``[`` then ``]`` and split into sentences on ``.``;
    each sentence is split on ``,`` into its longest chunk (the first one on ties) and the
    re-joined rest; candidates of at most 5 characters are dropped, the rest stripped of
    spaces, and one is drawn with ``rng.sample(candidates, 1)``. IVT passes the lower-cased
    caption.

    Args:
        caption: the (lower-cased) caption.
        rng: Python random source; a ``random.Random`` in the same state as IVT's global
            ``random`` yields the same phrase.

    Returns:
        The phrase, or the caption itself when no candidate survives (without drawing).

    Differences from the reference code: the reference raises on a caption without any
    candidate longer than 5 characters.
    """
    candidates = _clauses(caption, strip_brackets=True)
    if not candidates:
        return caption
    return rng.sample(candidates, 1)[0]


def word_level_text(attributes: Mapping[str, str], caption: str, rng: random.Random) -> str:
    """A word-level text (attribute phrases) of a caption, as IVT's dataset draws it.

    With attributes (body part -> phrase): ``k = rng.randint(1, n)``, then ``rng.sample`` of
    ``k`` keys (in the mapping's order), their phrases joined with ``","``. Without: one clause
    of the caption drawn as in :func:`phrase_level_text` (the dataset's splitter, which strips
    only ``.``, not brackets). An empty result falls back to the caption.

    Args:
        attributes: phrase per body part, in the order the annotation file lists them.
        caption: the lower-cased caption (IVT lower-cases it in the dataset).
        rng: Python random source (see :func:`phrase_level_text`).

    Returns:
        The word-level text.

    Differences from the reference code: a caption without attributes and without any clause
    longer than 5 characters returns the caption (the reference raises).
    """
    if attributes:
        keys = list(attributes.keys())
        chosen = rng.sample(keys, rng.randint(1, len(keys)))
        text = ",".join(attributes[k] for k in chosen)
    else:
        candidates = _clauses(caption, strip_brackets=False)
        text = rng.sample(candidates, 1)[0] if candidates else caption
    return text if text else caption
