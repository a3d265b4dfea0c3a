"""The CLIP byte-level BPE tokenizer, identical to OpenAI CLIP's (and open_clip's default).

Text is cleaned (``ftfy.fix_text``, HTML entities unescaped twice, stripped, runs of
whitespace collapsed to one space, lower-cased), split into words by the CLIP
pre-tokenisation regex, each word is UTF-8 byte-mapped to printable characters and merged by
rank with the CLIP merges. A caption becomes ``[sot] + bpe + [eot]`` padded with zeros to
``context_length``. Text models pool the hidden state at ``argmax(ids)``, so the end-of-text
token must keep the largest id; IRRA's ``<|mask|>`` therefore replaces the last merge
(id 49405) instead of growing the vocabulary.

The vocabulary comes from the merges file shipped with textreid (``bpe_simple_vocab_16e6.txt.gz``,
MIT licence, from OpenAI CLIP) or from the Hugging Face layout (``vocab.json`` +
``merges.txt``).

A saved retriever names its tokenizer's ``type`` in its config; :func:`get_tokenizer` finds
the class of a type (``"clip_bpe"``: :class:`CLIPTokenizer`, ``"bert_wordpiece"``:
:class:`~textreid.wordpiece.WordPieceTokenizer`), and :func:`register_tokenizer` adds one.
"""

from __future__ import annotations

import functools
import html
import itertools
import json
import os
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Protocol

import ftfy
import regex
from torch import Tensor

from textreid._checks import check_int
from textreid._io import atomic_write, parse_json_object, read_bounded
from textreid._registry import Registry
from textreid._tokenizer_base import BatchTokenizer, check_config, write_all
from textreid.wordpiece import WordPieceTokenizer

__all__ = ["CLIPTokenizer", "Tokenizer", "get_tokenizer", "list_tokenizers", "register_tokenizer"]

_FN = "CLIPTokenizer"
_SOT = "<|startoftext|>"
_EOT = "<|endoftext|>"
_EOW = "</w>"
# OpenAI CLIP uses lines 1..49152-256-2 of its merges file: 48,894 merges, so that 512 byte
# symbols + merges + 2 specials make 49,408 ids.
_NUM_MERGES = 49152 - 256 - 2
_WORD_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
_BUNDLED_MERGES = "bpe_simple_vocab_16e6.txt.gz"
_HF_VOCAB = "vocab.json"
_HF_MERGES = "merges.txt"
_MERGES_HEADER = "#version: 0.2"
_CONFIG_TYPE = "clip_bpe"
_CONFIG_KEYS = ("type", "context_length", "mask_token", "files")
# Largest vocabulary or (decompressed) merges file read; CLIP's are 1-2 MiB.
_MAX_FILE_BYTES = 32 << 20

_PathLike = str | os.PathLike[str]


@functools.cache
def _byte_encoder() -> dict[int, str]:
    """Map every byte to a printable character (printable Latin-1 bytes map to themselves).

    The insertion order (printable bytes first, then the rest by value) fixes the ids of the
    256 base symbols, so it must stay exactly as in OpenAI CLIP.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.cache
def _byte_decoder() -> dict[str, int]:
    return {c: b for b, c in _byte_encoder().items()}


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def _bpe(symbols: list[str], ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """Merge the lowest-ranked adjacent pair everywhere (left to right) until none is ranked."""
    word = symbols
    while len(word) > 1:
        best: tuple[str, str] | None = None
        best_rank = sys.maxsize
        for pair in itertools.pairwise(word):
            rank = ranks.get(pair)
            if rank is not None and rank < best_rank:
                best, best_rank = pair, rank
        if best is None:
            break
        first, second = best
        merged: list[str] = []
        i, n = 0, len(word)
        while i < n:
            if i + 1 < n and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def _read_merges(data: bytes, source: str) -> list[tuple[str, str]]:
    """Parse a merges file (optionally gzipped, optional ``#version`` header); keep at most
    the first 48,894 merges, as CLIP does."""
    if data[:2] == b"\x1f\x8b":
        # Bounded: a small gzip file may inflate to gigabytes.
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflate.decompress(data, _MAX_FILE_BYTES + 1)
        except zlib.error as err:
            raise ValueError(f"{_FN}: merges file {source} is not valid gzip ({err})") from None
        if len(data) > _MAX_FILE_BYTES:
            raise ValueError(
                f"{_FN}: merges file {source} inflates to more than {_MAX_FILE_BYTES} bytes; "
                "it is corrupt or not a merges file"
            )
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise ValueError(f"{_FN}: merges file {source} is not UTF-8 text ({err})") from None
    # The CLIP file's first line is '"bpe_simple_vocab_16e6.txt#version: 0.2', HF's is
    # '#version: 0.2'.
    start = 1 if lines and "#version" in lines[0] else 0
    body = lines[start : start + _NUM_MERGES]
    while body and not body[-1].strip():
        body.pop()
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(body, start=start + 1):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(
                f"{_FN}: merges file {source} line {lineno} must hold two symbols 'a b', "
                f"got {line!r}"
            )
        merges.append((parts[0], parts[1]))
    if not merges:
        raise ValueError(f"{_FN}: merges file {source} holds no merges")
    return merges


@functools.cache
def _bundled_merges() -> tuple[tuple[str, str], ...]:
    data = resources.files("textreid").joinpath(_BUNDLED_MERGES).read_bytes()
    return tuple(_read_merges(data, _BUNDLED_MERGES))


def _read_vocab(path: Path) -> list[str]:
    """Read a Hugging Face ``vocab.json`` (token -> id) into an id -> token list."""
    raw = parse_json_object(read_bounded(path, max_bytes=_MAX_FILE_BYTES, fn=_FN), str(path), _FN)
    if not raw:
        raise ValueError(f"{_FN}: {path} must hold a non-empty JSON object token -> id")
    tokens: list[str | None] = [None] * len(raw)
    for token, idx in raw.items():
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(raw):
            raise ValueError(
                f"{_FN}: {path} maps {token!r} to {idx!r}; ids must be the integers "
                f"0..{len(raw) - 1}"
            )
        if tokens[idx] is not None:
            raise ValueError(f"{_FN}: {path} gives id {idx} to both {tokens[idx]!r} and {token!r}")
        tokens[idx] = token
    return [t for t in tokens if t is not None]


def _clip_vocab(merges: Sequence[tuple[str, str]]) -> list[str]:
    symbols = list(_byte_encoder().values())
    return [*symbols, *(s + _EOW for s in symbols), *(a + b for a, b in merges), _SOT, _EOT]


class Tokenizer(Protocol):
    """What a :class:`~textreid.Retriever` needs of its caption tokenizer.

    :class:`CLIPTokenizer` and :class:`~textreid.wordpiece.WordPieceTokenizer` are the
    built-in ones. A saved retriever stores :meth:`to_config` (whose ``"type"`` names the
    class in :func:`register_tokenizer`'s registry) and the files of
    :meth:`vocabulary_files`; loading calls the class's :meth:`from_config` with the folder
    holding them.

    Attributes:
        config_type: the ``"type"`` :meth:`to_config` writes.
        file_names: every file name a config of this class may list under ``"files"``;
            loading opens no other file.
        context_length: the length ``L`` of every row of ids.
    """

    config_type: ClassVar[str]
    file_names: ClassVar[tuple[str, ...]]
    context_length: int

    def __call__(self, texts: str | Sequence[str]) -> Tensor:
        """Token ids ``LongTensor[B, L]`` of ``B`` captions (one str gives ``B = 1``)."""
        ...

    def to_config(self) -> dict[str, Any]:
        """JSON-able settings with ``"type"`` (the registered name) and ``"files"`` (the
        names of :meth:`vocabulary_files` to save beside the config, possibly none)."""
        ...

    def vocabulary_files(self) -> dict[str, bytes]:
        """The bytes of the files ``to_config()["files"]`` lists, by name."""
        ...

    @classmethod
    def from_config(cls, config: Mapping[str, Any], folder: _PathLike | None = None) -> Tokenizer:
        """Rebuild the tokenizer from :meth:`to_config` output and the folder of its files."""
        ...


class CLIPTokenizer(BatchTokenizer):
    """OpenAI CLIP's byte-level BPE tokenizer, with an optional IRRA ``<|mask|>`` token.

    Calling the tokenizer turns captions into ``LongTensor[B, L]`` rows
    ``[sot] + bpe + [eot]`` padded with ``0`` (token 0 is the real symbol ``!``; padding is
    recognised by its position after ``eot``). The ids equal OpenAI CLIP's, open_clip's
    ``open_clip.tokenize`` and IRRA's for every input string.

    Args:
        merges_file: a merges file, gzipped or plain, with or without the ``#version: 0.2``
            header; only its first 48,894 merges are used. ``None`` (default) uses the CLIP
            merges shipped with textreid.
        vocab_file: a Hugging Face ``vocab.json`` (token -> id). ``None`` derives the CLIP
            vocabulary from the merges: 256 byte symbols, the same with ``</w>``, one token
            per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (49,408 in all).
        context_length: the padded length ``L`` of every row (CLIP: 77); at least 2.
        mask_token: ``None`` (default) or the text of a mask token, e.g. ``"<|mask|>"`` for
            IRRA's masked language modelling. It replaces the last merge (id 49405, ``jekyll``),
            so the vocabulary keeps its size and ``<|endoftext|>`` keeps the largest id; the
            mask string is recognised inside captions. A ``vocab_file`` that already lists the
            mask token must give it the id just below ``<|startoftext|>``.
        cache_size: how many distinct words keep their BPE ids in a least-recently-used
            cache (0 disables it).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``context_length < 2``, a malformed or inconsistent vocabulary/merges
            file, a file that is not a regular file or holds (inflated) more than 32 MiB, a
            missing special token, or an unusable ``mask_token``.

    Differences from the reference code:
        - IRRA keeps the replaced merge among its BPE ranks, so encoding the word ``jekyll``
          raises ``KeyError`` there; here the merge is dropped and the word is spelled with
          the remaining merges (``jeky`` + ``ll``).
        - ``truncate=False`` raises ``ValueError`` (OpenAI CLIP raises ``RuntimeError``).
        - The special-token strings are OpenAI's (``<|startoftext|>``); open_clip recognises
          ``<start_of_text>`` inside captions instead. Ids are the same for all other text.

    Example:
        >>> tok = CLIPTokenizer()
        >>> ids = tok(["a woman in a red coat", "a man"])  # LongTensor[2, 77]
        >>> tok.decode(ids[0])
        'a woman in a red coat'
    """

    _fn: ClassVar[str] = _FN
    config_type: ClassVar[str] = _CONFIG_TYPE
    """The ``"type"`` of :meth:`to_config`, this class's name in :func:`get_tokenizer`."""
    file_names: ClassVar[tuple[str, ...]] = (_HF_VOCAB, _HF_MERGES)
    """The files a saved config may list (:meth:`to_config`'s ``files``)."""

    def __init__(
        self,
        merges_file: _PathLike | None = None,
        *,
        vocab_file: _PathLike | None = None,
        context_length: int = 77,
        mask_token: str | None = None,
        cache_size: int = 1 << 17,
    ) -> None:
        self.context_length = check_int(context_length, "context_length", _FN, min_value=2)
        self._cache_size = check_int(cache_size, "cache_size", _FN, min_value=0)
        if merges_file is None:
            if vocab_file is not None:
                raise ValueError(f"{_FN}: vocab_file needs its merges_file")
            merges = list(_bundled_merges())
        else:
            path = Path(merges_file)
            merges = _read_merges(read_bounded(path, max_bytes=_MAX_FILE_BYTES, fn=_FN), str(path))
        self._bundled = merges_file is None
        vocab = _clip_vocab(merges) if vocab_file is None else _read_vocab(Path(vocab_file))
        source = "the CLIP vocabulary" if vocab_file is None else str(vocab_file)
        self._set_tables(merges, vocab, mask_token, source)

    def _set_tables(
        self,
        merges: list[tuple[str, str]],
        vocab: list[str],
        mask_token: str | None,
        source: str,
    ) -> None:
        """Check ``vocab`` against ``merges`` and the special tokens, then adopt both."""
        encoder: dict[str, int] = {}
        for idx, token in enumerate(vocab):
            if token in encoder:
                raise ValueError(f"{_FN}: {source} lists the token {token!r} twice")
            encoder[token] = idx
        for special in (_SOT, _EOT):
            if special not in encoder:
                raise ValueError(f"{_FN}: {source} has no {special} token")
        sot, eot = encoder[_SOT], encoder[_EOT]
        if eot != len(vocab) - 1:
            raise ValueError(
                f"{_FN}: {_EOT} must have the largest id {len(vocab) - 1} (text models pool "
                f"at argmax), but {source} gives it {eot}"
            )
        mask_id = (
            None
            if mask_token is None
            else self._add_mask(mask_token, vocab, encoder, merges, sot, source)
        )
        symbols = list(_byte_encoder().values())
        missing = [s for s in [*symbols, *(c + _EOW for c in symbols)] if s not in encoder]
        if missing:
            raise ValueError(f"{_FN}: {source} lacks the byte symbols {missing[:5]}")
        for rank, (a, b) in enumerate(merges):
            if a + b not in encoder:
                raise ValueError(
                    f"{_FN}: merge {rank} ({a!r}, {b!r}) makes {a + b!r}, which {source} "
                    "does not list"
                )
        self._merges = merges
        self._decoder = vocab
        self._encoder = encoder
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._sot, self._eot = sot, eot
        self._mask_token, self._mask_id = mask_token, mask_id
        self._specials = {_SOT: sot, _EOT: eot}
        if mask_token is not None and mask_id is not None:
            self._specials[mask_token] = mask_id
        alternatives = sorted(self._specials, key=len, reverse=True)
        self._pattern = regex.compile(
            "|".join(regex.escape(s) for s in alternatives) + "|" + _WORD_PATTERN,
            regex.IGNORECASE,
        )
        self._init_cache()

    @staticmethod
    def _add_mask(
        mask_token: object,
        vocab: list[str],
        encoder: dict[str, int],
        merges: list[tuple[str, str]],
        sot: int,
        source: str,
    ) -> int:
        """Put ``mask_token`` at id ``sot - 1`` in place of the last merge; return its id."""
        if not isinstance(mask_token, str):
            raise TypeError(
                f"{_FN}: mask_token must be a str or None, got {type(mask_token).__name__}"
            )
        if (
            not mask_token
            or mask_token != mask_token.lower()
            or any(c.isspace() for c in mask_token)
        ):
            raise ValueError(
                f"{_FN}: mask_token must be non-empty, lower-case and free of whitespace "
                f"(captions are lower-cased and split at spaces), got {mask_token!r}"
            )
        if mask_token in (_SOT, _EOT):
            raise ValueError(f"{_FN}: mask_token must differ from {_SOT} and {_EOT}")
        mask_id = sot - 1
        if mask_token in encoder:
            if encoder[mask_token] != mask_id:
                raise ValueError(
                    f"{_FN}: {source} gives {mask_token!r} the id {encoder[mask_token]}, "
                    f"but a mask token must sit at {mask_id}, just below {_SOT}"
                )
            return mask_id
        last = "".join(merges[-1])
        if vocab[mask_id] != last:
            raise ValueError(
                f"{_FN}: mask_token replaces the last merge {last!r}, but {source} has "
                f"{vocab[mask_id]!r} at id {mask_id}"
            )
        merges.pop()
        del encoder[last]
        vocab[mask_id] = mask_token
        encoder[mask_token] = mask_id
        return mask_id

    # -- construction from other layouts -------------------------------------------------

    @classmethod
    def from_hf_files(
        cls,
        folder: _PathLike | None = None,
        *,
        vocab_file: _PathLike | None = None,
        merges_file: _PathLike | None = None,
        context_length: int = 77,
        mask_token: str | None = None,
        cache_size: int = 1 << 17,
    ) -> CLIPTokenizer:
        """Build from the Hugging Face layout: ``vocab.json`` and ``merges.txt``.

        Args:
            folder: a folder holding ``vocab.json`` and ``merges.txt`` (e.g. a downloaded
                ``openai/clip-vit-base-patch16`` or what :meth:`save_vocabulary` wrote).
            vocab_file: explicit path of the vocabulary; overrides ``folder``.
            merges_file: explicit path of the merges; overrides ``folder``.
            context_length: see :class:`CLIPTokenizer`.
            mask_token: see :class:`CLIPTokenizer`.
            cache_size: see :class:`CLIPTokenizer`.

        Raises:
            ValueError: neither ``folder`` nor both explicit paths are given.
            FileNotFoundError: a file is missing.
        """
        if folder is not None:
            vocab_file = Path(folder) / _HF_VOCAB if vocab_file is None else vocab_file
            merges_file = Path(folder) / _HF_MERGES if merges_file is None else merges_file
        if vocab_file is None or merges_file is None:
            raise ValueError(
                f"{_FN}.from_hf_files: pass a folder or both vocab_file and merges_file"
            )
        return cls(
            merges_file,
            vocab_file=vocab_file,
            context_length=context_length,
            mask_token=mask_token,
            cache_size=cache_size,
        )

    def restricted_to(self, texts: Iterable[str]) -> CLIPTokenizer:
        """This tokenizer with only the vocabulary ``texts`` use, for text towers trained from
        scratch.

        A random-init text tower learns one embedding row per id, and an MLM head scores
        every id at each masked position: with CLIP's 49,408 ids most rows never see a
        caption, and the vocabulary projection dominates a small model's step. The result
        keeps the 512 byte symbols (any text still encodes; unseen words become shorter
        pieces), the merges the words of ``texts`` use, in their order, the mask token and
        ``<|startoftext|>`` / ``<|endoftext|>``, renumbered in that order (the end token keeps
        the largest id). BPE applies the lowest-ranked merge present at each step, and every
        merge a word of ``texts`` applies is kept, so those words split into the same pieces
        as here; only the ids change. It saves and loads like any tokenizer with its own
        files (``vocab.json`` + ``merges.txt``).

        Args:
            texts: the captions the vocabulary must cover (e.g. a training split's).

        Returns:
            A new :class:`CLIPTokenizer`; ``vocab_size`` is 515 + the merges kept (+1 with a
            mask token).

        Raises:
            TypeError: ``texts`` is a single str, or holds something that is not a str.

        Example:
            >>> tok = CLIPTokenizer().restricted_to(["a man in a red coat"])
            >>> tok.decode(tok(["a red coat"])[0])
            'a red coat'
        """
        fn = f"{_FN}.restricted_to"
        if isinstance(texts, str):
            raise TypeError(f"{fn}: texts must be a sequence of captions, got one str")
        pieces: set[str] = set()
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{fn}: texts[{i}] must be a str, got {type(text).__name__}")
            pieces.update(self._decoder[j] for j in self._encode_clean(_clean(text)))
        # Each merged piece has exactly one merge that makes it (the vocabulary has no
        # duplicates); the merges a word applies are that closure over its final pieces.
        maker = {a + b: (a, b) for a, b in self._merges}
        kept: set[tuple[str, str]] = set()
        todo = [p for p in pieces if p in maker]
        while todo:
            pair = maker[todo.pop()]
            if pair not in kept:
                kept.add(pair)
                todo.extend(p for p in pair if p in maker)
        merges = [m for m in self._merges if m in kept]
        vocab = _clip_vocab(merges)
        if self._mask_token is not None:
            # Listed just below <|startoftext|>, where a mask token sits; the merges stay whole.
            vocab.insert(len(vocab) - 2, self._mask_token)
        restricted = object.__new__(type(self))
        restricted.context_length = self.context_length
        restricted._cache_size = self._cache_size
        restricted._bundled = False
        restricted._set_tables(merges, vocab, self._mask_token, "the restricted vocabulary")
        return restricted

    def save_vocabulary(self, directory: _PathLike) -> tuple[str, str]:
        """Write ``vocab.json`` and ``merges.txt`` (Hugging Face layout) into ``directory``.

        The files hold the merges in use (48,893 when a mask token replaced the last one)
        and read back with :meth:`from_hf_files` or ``transformers.CLIPTokenizer``.

        Returns:
            The paths of ``vocab.json`` and ``merges.txt``.
        """
        out = Path(directory)
        paths = []
        for name, data in self.vocabulary_files().items():
            atomic_write(out / name, functools.partial(write_all, data=data))
            paths.append(str(out / name))
        return paths[0], paths[1]

    def vocabulary_files(self) -> dict[str, bytes]:
        """The bytes of ``vocab.json`` and ``merges.txt`` (:meth:`save_vocabulary`'s files),
        by name, in that order."""
        vocab = json.dumps(self.get_vocab(), ensure_ascii=False, indent=2) + "\n"
        lines = [_MERGES_HEADER, *(f"{a} {b}" for a, b in self._merges)]
        return {
            _HF_VOCAB: vocab.encode("utf-8"),
            _HF_MERGES: ("\n".join(lines) + "\n").encode("utf-8"),
        }

    def to_config(self) -> dict[str, Any]:
        """The tokenizer settings for a saved model config.

        ``files`` is empty when the tokenizer uses the merges shipped with textreid; otherwise
        it is ``["vocab.json", "merges.txt"]`` and the caller must also write those files
        with :meth:`save_vocabulary` next to the config.
        """
        return {
            "type": _CONFIG_TYPE,
            "context_length": self.context_length,
            "mask_token": self._mask_token,
            "files": [] if self._bundled else [_HF_VOCAB, _HF_MERGES],
        }

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], folder: _PathLike | None = None
    ) -> CLIPTokenizer:
        """Rebuild a tokenizer from :meth:`to_config` output.

        Args:
            config: the dict written by :meth:`to_config`.
            folder: where the listed ``files`` lie (needed when ``files`` is not empty).

        Raises:
            TypeError: ``config`` is not a mapping.
            ValueError: unknown keys or type, or files listed without a folder.
        """
        fn = f"{_FN}.from_config"
        config = check_config(config, fn, _CONFIG_TYPE, _CONFIG_KEYS)
        files = config.get("files", [])
        context_length = config.get("context_length", 77)
        mask_token = config.get("mask_token")
        if not files:
            return cls(context_length=context_length, mask_token=mask_token)
        if sorted(files) != sorted([_HF_VOCAB, _HF_MERGES]):
            raise ValueError(f"{fn}: files must be [] or {[_HF_VOCAB, _HF_MERGES]}, got {files!r}")
        if folder is None:
            raise ValueError(f"{fn}: the config lists tokenizer files {files}; pass their folder")
        return cls.from_hf_files(folder, context_length=context_length, mask_token=mask_token)

    # -- properties ------------------------------------------------------------------------

    @property
    def sot_token_id(self) -> int:
        """Id of ``<|startoftext|>`` (49406)."""
        return self._sot

    @property
    def eot_token_id(self) -> int:
        """Id of ``<|endoftext|>`` (49407), the largest id."""
        return self._eot

    @property
    def mask_token(self) -> str | None:
        """The mask token's text, or ``None`` when the tokenizer has none."""
        return self._mask_token

    @property
    def mask_token_id(self) -> int | None:
        """Id of the mask token (49405), or ``None`` when the tokenizer has none."""
        return self._mask_id

    def __repr__(self) -> str:
        return (
            f"{_FN}(vocab_size={self.vocab_size}, context_length={self.context_length}, "
            f"mask_token={self._mask_token!r})"
        )

    # -- encoding --------------------------------------------------------------------------

    @staticmethod
    def clean(text: str) -> str:
        """CLIP's text cleaning: ``ftfy.fix_text``, HTML unescape twice, strip, collapse
        whitespace, lower-case. :meth:`encode` applies it first."""
        if not isinstance(text, str):
            raise TypeError(f"{_FN}.clean: text must be a str, got {type(text).__name__}")
        return _clean(text)

    def _encode_word(self, word: str) -> tuple[int, ...]:
        special = self._specials.get(word)
        if special is not None:
            return (special,)
        byte_encoder = _byte_encoder()
        symbols = [byte_encoder[b] for b in word.encode("utf-8")]
        symbols[-1] += _EOW
        encoder = self._encoder
        return tuple(encoder[s] for s in _bpe(symbols, self._ranks))

    def _encode_clean(self, text: str) -> list[int]:
        word_ids = self._word_ids
        ids: list[int] = []
        for word in self._pattern.findall(text):
            ids.extend(word_ids(word))
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one caption, without ``sot``/``eot`` and without padding.

        Raises:
            TypeError: ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"{_FN}.encode: text must be a str, got {type(text).__name__}")
        return self._encode_clean(_clean(text))

    def _row_ids(self) -> tuple[int, int, int]:
        return self._sot, self._eot, 0

    # -- decoding --------------------------------------------------------------------------

    def decode(self, ids: Sequence[int] | Tensor, *, skip_special_tokens: bool = True) -> str:
        """Turn ids back into text (the cleaned caption, up to spaces around punctuation).

        Everything after the first ``eot`` (the zero padding) is ignored. ``sot`` and ``eot``
        are dropped unless ``skip_special_tokens=False``; the mask token is always shown,
        as it stands for a word.

        Args:
            ids: a 1-D integer tensor ``[L]`` or a sequence of ints.
            skip_special_tokens: drop ``<|startoftext|>`` and ``<|endoftext|>``.

        Raises:
            TypeError: ``ids`` is not a 1-D integer tensor or a sequence of ints.
            ValueError: an id is outside ``[0, vocab_size)``.
        """
        seq = self._id_list(ids, "ids", f"{_FN}.decode")
        eot = self._eot
        if eot in seq:
            seq = seq[: seq.index(eot) + 1]
        special_ids = set(self._specials.values())
        byte_decoder = _byte_decoder()
        parts: list[str] = []
        buf = bytearray()

        def flush() -> None:
            if buf:
                parts.append(buf.decode("utf-8", errors="replace"))
                buf.clear()

        for idx in seq:
            token = self._decoder[idx]
            if idx in special_ids:
                flush()
                if idx == self._mask_id or not skip_special_tokens:
                    parts.append(token + " ")
                continue
            word_end = token.endswith(_EOW)
            buf.extend(byte_decoder[c] for c in (token[: -len(_EOW)] if word_end else token))
            if word_end:
                buf.extend(b" ")
        flush()
        return "".join(parts).strip()


_TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer type", arg="cls")


def register_tokenizer(name: str, cls: type[Tokenizer], *, overwrite: bool = False) -> None:
    """Register a tokenizer class under ``name``, the ``"type"`` its ``to_config`` writes.

    Loading a saved retriever builds its tokenizer with the registered class's
    ``from_config``; register your own class before loading a folder that names it.

    Args:
        name: the config type, ``cls.config_type`` (``"clip_bpe"`` and ``"bert_wordpiece"``
            are built in).
        cls: a class following the :class:`Tokenizer` protocol.
        overwrite: replace an existing class of that name.

    Raises:
        TypeError: ``name`` is not a str, or ``cls`` is not a class with ``from_config``
            and ``file_names``.
        ValueError: ``name`` is empty or differs from ``cls.config_type``, or is taken and
            ``overwrite`` is False.
    """
    fn = "register_tokenizer"
    if not isinstance(cls, type) or not all(
        hasattr(cls, attr) for attr in ("from_config", "file_names", "config_type")
    ):
        raise TypeError(
            f"{fn}: cls must be a tokenizer class with from_config, file_names and "
            f"config_type, got {cls!r}"
        )
    if cls.config_type != name:
        raise ValueError(
            f"{fn}: name {name!r} differs from {cls.__name__}.config_type "
            f"{cls.config_type!r}; a saved config is loaded by the type its tokenizer writes"
        )
    _TOKENIZERS.register(name, cls, overwrite=overwrite, fn=fn)


def list_tokenizers() -> list[str]:
    """Registered tokenizer config types, sorted."""
    return _TOKENIZERS.names()


def get_tokenizer(name: str) -> type[Tokenizer]:
    """The tokenizer class registered for the config type ``name``.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: unknown type (the message lists the registered ones).
    """
    return _TOKENIZERS.get(name, fn="get_tokenizer")


for _cls in (CLIPTokenizer, WordPieceTokenizer):
    register_tokenizer(_cls.config_type, _cls)
